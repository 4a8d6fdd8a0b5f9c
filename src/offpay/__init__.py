"""offpay: a reference system for secure offline payments in a two-tier retail digital
currency (central bank, intermediaries, cards and terminals that pay with no network)."""

__version__ = "0.1.0"
