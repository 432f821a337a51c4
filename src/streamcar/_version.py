"""The version of streamcar (also in pyproject.toml): a leaf, so that any module can read it."""

__version__ = "0.1.0"
