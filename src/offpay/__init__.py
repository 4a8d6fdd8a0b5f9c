"""offpay: a reference system for secure offline payments in a two-tier retail digital
currency (central bank, intermediaries, cards and terminals that pay with no network)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("offpay")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
