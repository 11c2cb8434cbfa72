"""pytest-koembed: the Korean text-embedding leaderboard as a pytest regression suite."""

__version__ = "0.1.0"
