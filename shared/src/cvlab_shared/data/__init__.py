"""Dataset readers per on-disk layout, synthetic writers of the same layouts, samplers."""
