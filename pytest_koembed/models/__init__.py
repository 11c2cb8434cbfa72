"""Models: loading, pooling, devices, the in-run embedding store and the disk cache."""
