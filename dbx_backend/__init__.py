"""dbx-backend: a small, fast, safe HTTP service in front of Databricks SQL warehouses."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dbx-backend")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
