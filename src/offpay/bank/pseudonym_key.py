"""The key an intermediary makes the notary's pseudonyms with (offpay.crypto.pseudonyms).

Kept in the intermediary's own database, next to the books it must match: a debit row names
what the notary knows its payment by, and a key lost or replaced would make the notary record
a retried payment under a new name. Made once, when an engine first opens the database (by
``offpay network init`` for a served network, by the engine for an in-process one), and never
sent to anyone.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from offpay.crypto.pseudonyms import KEY_BYTES
from offpay.store import schema


def load_pseudonym_key(db: Engine, random: Callable[[int], bytes]) -> bytes:
    """The database's key, made from ``random`` if it has none yet. Two engines opening a new
    database at once agree: the second one's insert fails and it reads the first one's key."""
    t = schema.pseudonym_key
    with db.connect() as conn:
        key = conn.execute(select(t.c.key).where(t.c.id == 1)).scalar()
    if key is None:
        try:
            with db.begin() as conn:
                conn.execute(insert(t).values(id=1, key=random(KEY_BYTES)))
        except IntegrityError:
            pass  # another engine made it first
        with db.connect() as conn:
            key = conn.execute(select(t.c.key).where(t.c.id == 1)).scalar_one()
    return bytes(key)
