"""The gate: baseline policy, tolerance and paired verdicts, Holm, the compare logic."""
