"""Statistics (numpy only): kernels (seeded draws, value kernels) < rules (value rules) <
bootstrap (intervals) < power (resolution, MDE) < permutation (paired tests) < multiplicity (Holm,
verdicts); intervals shapes them for the run record."""
