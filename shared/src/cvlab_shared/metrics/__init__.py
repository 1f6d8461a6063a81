"""Metrics: calibration, segmentation, retrieval, rank correlation; nearest-neighbour search."""
