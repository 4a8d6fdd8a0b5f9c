"""Where settlement time goes: a CPU-time profile of the terminals' syncs in the settling
process, folded into a few kinds of work so that the answer fits in a table and survives
refactoring.

The standard library's deterministic profiler, timed by the process's CPU clock: on a shared
machine a wall-clock profile (pyinstrument samples wall time) is mostly the time spent waiting
for the verification workers and for the machine, which is not what a payment costs. The
profiler inflates Python-heavy parts; compare profiles with each other, not with the
benchmark's CPU figures. The verification workers are started before the profile (their
start-up is not a payment's cost) and their CPU time is not in it.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from offpay.bench.settlement import BacklogPlan, make_wave, open_network, sqlite_urls
from offpay.crypto.keys import Algorithm

Say = Callable[[str], None]

# (kind, test on "file:function") in order; the first that matches names the kind
KINDS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    (
        "database commit (the driver's commit: fsync, or a server round trip)",
        lambda f, fn: "commit" in fn.lower() and ("built-in" in f or "psycopg" in f),
    ),
    (
        "PostgreSQL round trips (psycopg: send, wait, receive)",
        lambda f, fn: "psycopg" in f + fn or fn.startswith("wait"),
    ),
    (
        "SQLite driver (execute, fetch)",
        lambda f, fn: "built-in" in f and fn.startswith(("Cursor.", "Connection.")),
    ),
    (
        "signature verification",
        lambda f, fn: "PublicKey.verify" in fn or "verify_directly" in fn or "sign_open" in fn,
    ),
    ("signature creation", lambda f, fn: "PrivateKey.sign" in fn or fn.endswith("crypto_sign")),
    ("SQLAlchemy (statement building, caching, result rows)", lambda f, fn: "sqlalchemy" in f),
    ("CBOR encoding and decoding", lambda f, fn: "cbor2" in f + fn or "wire/codec" in f),
    ("X.509 certificate parsing", lambda f, fn: "x509" in f + fn or "load_der" in fn),
    ("offpay code", lambda f, fn: "offpay" in f),
    (
        "waiting for the verification workers (process pool)",
        lambda f, fn: "multiprocessing" in f or ("built-in" in f and fn == "lock.acquire"),
    ),
)


def kind_of(file_path: str, function: str) -> str:
    path = file_path.replace("\\", "/")
    for kind, test in KINDS:
        if test(path, function):
            return kind
    return "other (Python runtime, standard library)"


def short_location(file_path: str, function: str) -> str:
    """``package/module.py:function`` without any machine path."""
    path = file_path.replace("\\", "/")
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.rsplit("/", 2)[-1] if "/" in path else path
    return f"{path}:{function}"


def profile_settlement(
    backend: str,
    payments: int,
    *,
    urls: Mapping[str, str] | None = None,
    algorithm: Algorithm = Algorithm.ED25519,
    say: Say = print,
) -> dict[str, Any]:
    """Profile the settlement of a backlog of ``payments``; returns the share of time per
    kind of work and the functions that spend most time themselves."""
    plan = BacklogPlan(payments, per_card=50, per_terminal=250, resync_cards=0)
    with tempfile.TemporaryDirectory(prefix="offpay-profile-") as folder:
        the_urls = urls if urls is not None else sqlite_urls(Path(folder))
        say(f"profile on {backend}: building a backlog of {payments:,} payments")
        net = open_network(the_urls, plan, algorithm)
        _users, merchants, _made = make_wave(net, plan, 0, payments, say)
        say(f"profile on {backend}: profiling the terminals' syncs")
        for bank in net.banks.values():
            if payments >= bank.verifier.pool_min:
                bank.verifier.start_pool()
        try:
            selfs, total, tool = _cprofile(lambda: [m.pos.sync() for m in merchants])
        finally:
            for bank in net.banks.values():
                bank.verifier.close()
            for engine in (net.central.db, *(b.db for b in net.banks.values())):
                engine.dispose()
    kinds: dict[str, float] = {}
    for (file_path, function), seconds in selfs.items():
        kind = kind_of(file_path, function)
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    top = sorted(selfs.items(), key=lambda kv: -kv[1])[:15]
    return {
        "backend": backend,
        "payments": payments,
        "profiler": tool,
        "seconds": round(total, 3),
        "us_per_payment": round(1e6 * total / payments, 1),
        "kinds": [
            {
                "kind": k,
                "share_pct": round(100 * s / total, 1),
                "us_per_payment": round(1e6 * s / payments, 1),
            }
            for k, s in sorted(kinds.items(), key=lambda kv: -kv[1])
        ],
        "top_functions": [
            {
                "function": short_location(f, fn),
                "share_pct": round(100 * s / total, 1),
                "us_per_payment": round(1e6 * s / payments, 1),
            }
            for (f, fn), s in top
        ],
    }


def _cprofile(work: Callable[[], object]) -> tuple[dict[tuple[str, str], float], float, str]:
    """Self CPU time per (file, function) while ``work`` runs, the total, and the tool used."""
    import cProfile
    import pstats
    import time

    profiler = cProfile.Profile(time.process_time)
    start = time.process_time()
    profiler.runcall(work)
    total = time.process_time() - start
    stats = pstats.Stats(profiler)
    selfs: dict[tuple[str, str], float] = {}
    for (file_path, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        key = _named(file_path, function)
        selfs[key] = selfs.get(key, 0.0) + row[2]
    return selfs, total, "cProfile, CPU time of the settling process"


_METHOD = re.compile(r"<method '(\w+)' of '(?:[\w.]*\.)?(\w+)' objects>")
_BUILTIN = re.compile(r"<built-in method ([\w.]+)>")


def _named(file_path: str, function: str) -> tuple[str, str]:
    """cProfile's name for a function written in C (file ``~``) as the kinds above read it:
    ``<built-in>`` and ``Class.method`` (``<method 'commit' of 'sqlite3.Connection' objects>``
    is ``Connection.commit``), so that a driver's commit or execute is counted as such."""
    if file_path != "~":
        return file_path, function
    method = _METHOD.fullmatch(function)
    if method is not None:
        return "<built-in>", f"{method.group(2)}.{method.group(1)}"
    builtin = _BUILTIN.fullmatch(function)
    return "<built-in>", builtin.group(1) if builtin is not None else function
