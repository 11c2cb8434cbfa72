"""Statistics: resampling kernels, intervals, paired tests, power (numpy/scipy only)."""
