"""Counting the work a flow does: signatures made and verified, SQL statements and commits.

A ratio to a ceiling needs to know how many signatures a flow really performs, and that number
changes whenever the protocol does. So it is counted, not written down: every signature in
offpay goes through :data:`offpay.crypto.keys.ALGORITHMS`, and every HPKE operation of the
offline hop through :data:`offpay.wire.sealed_payment.HPKE`, which :func:`count_crypto` wraps
for the duration of a block. SQL is counted with SQLAlchemy's public engine events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

from offpay.crypto import keys
from offpay.wire import sealed_payment


@dataclass
class CryptoCount:
    """Signatures made and verified inside a :func:`count_crypto` block, per algorithm, and
    the HPKE keys made, payments sealed and opened (with the bytes sealed); with ``record``,
    every verification's arguments, to replay them for their bare cost."""

    signs: dict[str, int] = field(default_factory=dict)
    verifies: dict[str, int] = field(default_factory=dict)
    recorded: list[tuple[Any, Any, bytes, bytes]] = field(default_factory=list, repr=False)
    hpke_keys: int = 0
    hpke_seals: int = 0
    hpke_opens: int = 0
    hpke_sealed_bytes: int = 0  # plaintext sealed, summed: the size the ceiling measures at

    def add(self, other: CryptoCount) -> None:
        """Add ``other``'s counts to these (not its recorded verifications)."""
        for name, n in other.signs.items():
            self.signs[name] = self.signs.get(name, 0) + n
        for name, n in other.verifies.items():
            self.verifies[name] = self.verifies.get(name, 0) + n
        self.hpke_keys += other.hpke_keys
        self.hpke_seals += other.hpke_seals
        self.hpke_opens += other.hpke_opens
        self.hpke_sealed_bytes += other.hpke_sealed_bytes

    @property
    def total_signs(self) -> int:
        return sum(self.signs.values())

    @property
    def total_verifies(self) -> int:
        return sum(self.verifies.values())


@dataclass(frozen=True)
class _Counting:
    """Stands in for one algorithm's scheme and counts what passes through it."""

    name: str
    inner: Any
    count: CryptoCount
    record: bool

    def generate(self) -> Any:
        return self.inner.generate()

    def sign(self, key: Any, data: bytes) -> bytes:
        self.count.signs[self.name] = self.count.signs.get(self.name, 0) + 1
        return self.inner.sign(key, data)

    def verify(self, key: Any, signature: bytes, data: bytes) -> None:
        self.count.verifies[self.name] = self.count.verifies.get(self.name, 0) + 1
        if self.record:
            self.count.recorded.append((self.inner, key, signature, data))
        self.inner.verify(key, signature, data)

    def owns(self, key: object) -> bool:
        return bool(self.inner.owns(key))


class _CountingHpke(sealed_payment.Hpke):
    """Stands in for :data:`offpay.wire.sealed_payment.HPKE` and counts its operations."""

    def __init__(self, inner: sealed_payment.Hpke, count: CryptoCount) -> None:
        self.inner = inner
        self.count = count

    def keygen(self, random: Any) -> Any:
        self.count.hpke_keys += 1
        return self.inner.keygen(random)

    def seal(self, plain: bytes, public: bytes, info: bytes) -> bytes:
        self.count.hpke_seals += 1
        self.count.hpke_sealed_bytes += len(plain)
        return self.inner.seal(plain, public, info)

    def open(self, sealed: bytes, private: Any, info: bytes) -> bytes:
        self.count.hpke_opens += 1
        return self.inner.open(sealed, private, info)


@contextlib.contextmanager
def count_crypto(*, record: bool = False) -> Iterator[CryptoCount]:
    """Count every signature made and verified in the block (all algorithms), and every HPKE
    key made, payment sealed and opened."""
    count = CryptoCount()
    saved = dict(keys.ALGORITHMS)
    saved_hpke = sealed_payment.HPKE
    try:
        for alg, scheme in saved.items():
            keys.ALGORITHMS[alg] = _Counting(alg.value, scheme, count, record)  # type: ignore[assignment]
        sealed_payment.HPKE = _CountingHpke(saved_hpke, count)
        yield count
    finally:
        keys.ALGORITHMS.update(saved)
        sealed_payment.HPKE = saved_hpke


def replay_seconds(recorded: list[tuple[Any, Any, bytes, bytes]], repeat: int = 5) -> float:
    """The best CPU time of ``repeat`` runs to verify exactly the recorded signatures again:
    the bare signature cost of a flow."""
    import time

    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for scheme, key, signature, data in recorded:
            scheme.verify(key, signature, data)
        best = min(best, time.process_time() - start)
    return best


@dataclass
class SqlCount:
    statements: int = 0
    commits: int = 0
    checkouts: int = 0  # connections taken from the pool (each a ping and a reset on PostgreSQL)


@contextlib.contextmanager
def count_sql(engines: Iterable[Engine]) -> Iterator[SqlCount]:
    """Count SQL statements, commits and pool checkouts on ``engines`` inside the block."""
    count = SqlCount()

    def on_execute(*_args: Any, **_kwargs: Any) -> None:
        count.statements += 1

    def on_commit(*_args: Any, **_kwargs: Any) -> None:
        count.commits += 1

    def on_checkout(*_args: Any, **_kwargs: Any) -> None:
        count.checkouts += 1

    engines = list(engines)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "commit", on_commit)
        event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield count
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "commit", on_commit)
            event.remove(engine.pool, "checkout", on_checkout)
