"""How an intermediary's engine is named on the wire: the receiver of its devices' messages and
of other intermediaries' requests, and the identity in its certificate."""

from __future__ import annotations


def engine_id(institution: str) -> str:
    return f"{institution}/engine"
