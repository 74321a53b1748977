"""The installed version of pgqueue."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pgqueue")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
