"""The release number, in one place: ``pyproject.toml`` reads it for the package metadata,
and ``--version`` prints it (what is running, even from a source checkout)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
