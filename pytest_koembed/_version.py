"""The package version, kept in its own module so that any layer can name it without importing
the public API in ``pytest_koembed/__init__.py``."""

__version__ = "0.1.0"
