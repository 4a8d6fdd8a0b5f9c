"""The first answer to every mutating request, kept so that a retry gets it again.

Every mutating request carries an ``Idempotency-Key`` header. The answer (success or refusal)
is kept under the authenticated sender and that key, with a digest of the request; a retry
with the same key and the same bytes gets the first answer byte for byte, and the engine is not
asked again. The same key with other bytes is refused (``http.idempotency_key_reused``).
Requests from one sender with one key, or carrying one message nonce, run one at a time, so
two copies of a request racing each other are answered once. Answers that say "try again"
(:data:`offpay.service.problems.RETRYABLE`) are not kept.

Beneath this, the engines remember every message nonce they answered: a request resent under
a new key still moves nothing twice. This table only makes the contract explicit at the HTTP
level and extends it to refusals and to requests whose engine answer is not remembered.

Answers are kept for a retention window (:mod:`offpay.service.retention`), the nonces beneath
them for good.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from sqlalchemy import (
    Engine,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from offpay.errors import Refused
from offpay.store.schema import written_at

KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    media_type: str
    replayed: bool = False


def request_digest(kind: str, body: bytes) -> bytes:
    return hashlib.sha256(kind.encode() + b"\x00" + body).digest()


class KeyLocks:
    """One lock per key in use, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, list[int]]] = {}

    @contextlib.contextmanager
    def hold(self, *keys: Hashable) -> Iterator[None]:
        """Hold every key's lock, taken in one order so two holders never wait on each other."""
        with contextlib.ExitStack() as stack:
            for key in sorted(set(keys), key=repr):
                stack.enter_context(self._one(key))
            yield

    @contextlib.contextmanager
    def _one(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]


class AnswerStore:
    """First answers, in the party's own database (a table of its own)."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table  # created by the party's migrations (store/schema.py)
        self.locks = KeyLocks()

    def first(self, sender: str, key: str, kind: str, digest: bytes) -> Answer | None:
        a = self.table
        with self.engine.connect() as conn:
            row = conn.execute(select(a).where(a.c.sender == sender, a.c.key == key)).first()
        if row is None:
            return None
        if row.kind != kind or bytes(row.digest) != digest:
            raise Refused(
                "this Idempotency-Key was used for another request; use a new key for a new "
                "request and the same key only to retry the same bytes",
                code="http.idempotency_key_reused",
            )
        return Answer(row.status, bytes(row.body), row.media_type, replayed=True)

    def keep(self, sender: str, key: str, kind: str, digest: bytes, answer: Answer) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(self.table).values(
                        sender=sender,
                        key=key,
                        kind=kind,
                        digest=digest,
                        status=answer.status,
                        media_type=answer.media_type,
                        body=answer.body,
                        created_at=written_at(),  # pruned after the retention window
                    )
                )
        except IntegrityError:
            pass  # kept already: only one process serves a party, so it is this very answer
