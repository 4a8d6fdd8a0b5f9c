"""Ceilings measured in the same run as the figures: what this machine can do at best.

A payments-per-second figure alone says little; next to "this core verifies 19 000 Ed25519
signatures per second" and "this database takes 60 000 inserted rows per second" it says how
much of the machine the protocol leaves unused.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, Table, insert

from offpay.crypto.keys import Algorithm, Signer, verify_signature
from offpay.store.database import connect

MESSAGE_BYTES = 200  # about the size of a signed payment's payload


@dataclass(frozen=True)
class SignatureRate:
    algorithm: str
    signs_per_s: float  # one core
    verifies_per_s: float  # one core


def _rate(
    fn: Callable[[], object],
    seconds: float,
    batch: int = 50,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Calls per second of ``fn`` by ``clock``, run for about ``seconds`` after a warm-up.
    CPU-bound work is timed by this process's CPU time: a rate per core that other work on a
    shared machine does not lower."""
    for _ in range(batch):
        fn()
    done, start = 0, clock()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        done += batch
        now = clock()
        if now >= deadline:
            return done / (now - start)


def signature_rate(algorithm: Algorithm, seconds: float = 1.0) -> SignatureRate:
    """Signatures made and verified per second of CPU time on one core, through offpay's own
    entry points (:class:`Signer` and :func:`verify_signature`)."""
    signer = Signer.generate(algorithm)
    data = os.urandom(MESSAGE_BYTES)
    signature = signer.sign(data)
    public = signer.public_key
    return SignatureRate(
        algorithm.value,
        _rate(lambda: signer.sign(data), seconds / 2, clock=time.process_time),
        _rate(
            lambda: verify_signature(public, signature, data),
            seconds / 2,
            clock=time.process_time,
        ),
    )


@dataclass(frozen=True)
class HpkeRate:
    """The offline hop's HPKE operations per second of CPU on one core (issue 19's sealing of a
    payment to its payee): the payee's key for one request, sealing a payment of
    ``plain_bytes`` to it, and opening it."""

    plain_bytes: int
    keys_per_s: float
    seals_per_s: float
    opens_per_s: float


PAYMENT_BYTES = 2000  # about a signed Ed25519 offline payment as the card seals it


def hpke_rate(plain_bytes: int = PAYMENT_BYTES, seconds: float = 1.0) -> HpkeRate:
    """Through the same entry points the devices use (:data:`sealed_payment.HPKE`), with a key
    object already loaded for opening, as a device holds it from the request it made."""
    from offpay.wire import sealed_payment

    hpke = sealed_payment.HPKE
    private, public = hpke.keygen(os.urandom)
    plain = os.urandom(plain_bytes)
    info = sealed_payment.INFO + b"terminal\x00" + os.urandom(16)
    sealed = hpke.seal(plain, public, info)
    third = seconds / 3
    return HpkeRate(
        plain_bytes,
        _rate(lambda: hpke.keygen(os.urandom), third, clock=time.process_time),
        _rate(lambda: hpke.seal(plain, public, info), third, clock=time.process_time),
        _rate(lambda: hpke.open(sealed, private, info), third, clock=time.process_time),
    )


@dataclass(frozen=True)
class InsertRate:
    backend: str
    rows_per_s_commit_each: float  # one row per transaction, as a naive ledger writes
    rows_per_s_batched: float  # BATCH rows per transaction (executemany)


BATCH = 1000
PAYLOAD_BYTES = 1500  # about a stored signed payment


def _table() -> tuple[MetaData, Table]:
    meta = MetaData()
    table = Table(
        "bench_insert",
        meta,
        Column("tx_id", LargeBinary(16), primary_key=True),
        Column("amount", BigInteger, nullable=False),
        Column("evidence", LargeBinary(32), nullable=False),
        Column("payment", LargeBinary, nullable=False),
    )
    return meta, table


def insert_rate(backend: str, url: str, seconds: float = 2.0) -> InsertRate:
    """Bare inserts of payment-sized rows into an empty keyed table, with the same engine
    options the intermediaries use (:func:`connect`); by the wall clock, since commits
    wait for the disk."""
    meta, table = _table()
    engine = connect(url)
    meta.create_all(engine)  # a scratch table of the benchmark's own: no migrations
    payload = os.urandom(PAYLOAD_BYTES)

    def row() -> dict[str, object]:
        return {
            "tx_id": os.urandom(16),
            "amount": 100,
            "evidence": os.urandom(32),
            "payment": payload,
        }

    try:

        def one() -> None:
            with engine.begin() as conn:
                conn.execute(insert(table), row())

        single = _rate(one, seconds / 2, batch=10)

        def many() -> None:
            rows = [row() for _ in range(BATCH)]
            with engine.begin() as conn:
                conn.execute(insert(table), rows)

        batched = _rate(many, seconds / 2, batch=1) * BATCH
    finally:
        meta.drop_all(engine)
        engine.dispose()
    return InsertRate(backend, single, batched)


def sqlite_insert_rate(seconds: float = 2.0) -> InsertRate:
    """Insert rate into a SQLite file (WAL, as the intermediaries open it)."""
    with tempfile.TemporaryDirectory(prefix="offpay-bench-") as folder:
        return insert_rate("sqlite", f"sqlite+pysqlite:///{folder}/ceiling.sqlite", seconds)
