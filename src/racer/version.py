"""The package version, in a module of its own so that any module can import it without
importing the package ``racer`` (whose ``__init__`` names the modules that would import it)."""

__version__ = "0.1.0"
