"""A whole run: the end of a run (verdicts to files and exit status), shards and merge."""
