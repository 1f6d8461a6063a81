"""Backbones shared by several packages, and loading of user-named pretrained weights."""
