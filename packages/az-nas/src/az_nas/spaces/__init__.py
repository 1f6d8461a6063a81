"""Search spaces: NAS-Bench-201 cells and the MobileNetV2 space of the ImageNet experiments."""
