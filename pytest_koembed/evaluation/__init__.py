"""Evaluation: the one place that calls mteb; per-example capture, sparse scoring, progress."""
