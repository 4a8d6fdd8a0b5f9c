"""The wire format as CDDL (RFC 8610), shipped with the package so that a tool or a test can
load it: every message, the signed envelope, the body of each HTTP route and the data of each
card command. docs/wire.md explains it."""

from __future__ import annotations

from importlib.resources import files

CDDL_FILE = "offpay.cddl"


def cddl_text() -> str:
    """The specification's text, as shipped in ``offpay/wire/``."""
    return files("offpay.wire").joinpath(CDDL_FILE).read_text(encoding="utf-8")
