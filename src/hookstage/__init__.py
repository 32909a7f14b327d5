"""hookstage: the Ango Hub compatible Webhook stage, and the toolkit for the receiving end."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hookstage")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
