"""The independent auditor over a settled backlog (issue 18): N offline payments made and
settled through the real protocol (the settlement benchmark's backlog builder,
:mod:`offpay.bench.settlement`), then audited from the databases by ``offpay audit``'s code.

The audit runs in a fresh process of its own, so that its peak memory is the auditor's, not
the backlog builder's: streaming every table, it must stay flat as N grows. A second run
resumes from the first one's state and must read next to nothing. Both must find the honest
backlog clean."""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from offpay.bench.settlement import (
    BacklogPlan,
    make_wave,
    open_network,
    peak_rss_bytes,
    sqlite_urls,
)
from offpay.crypto.keys import Algorithm

Say = Callable[[str], None]


def build_backlog(urls: Mapping[str, str], plan: BacklogPlan, say: Say) -> tuple[bytes, str]:
    """A backlog of ``plan.payments`` settled payments in the databases at ``urls``; returns
    the network's root certificate and currency."""
    net = open_network(urls, plan, Algorithm.ED25519)
    made = 0
    wave = 0
    while made < plan.payments:
        count = min(plan.wave, plan.payments - made)
        users, merchants, _ = make_wave(net, plan, wave, count, say if wave == 0 else _quiet)
        for merchant in merchants:
            merchant.pos.sync()
        for user in users:  # the cards confirm their syncs: instructions and confirmations
            user.phone.sync(user.pin)
            del net.users[user.name]
        made += count
        wave += 1
        say(f"  backlog: {made:,}/{plan.payments:,} payments settled")
    net.check_conservation()
    root, currency = net.central.root_der, net.currency
    for engine in [net.central.db, *(b.db for b in net.banks.values())]:
        engine.dispose()
    for bank in net.banks.values():
        bank.verifier.close()
    return root, currency


def _quiet(_text: str) -> None:
    """Progress of the waves after the first: one line per wave is enough."""


def _audit_child(conn: Any, sources: Any, state: Path) -> None:
    """A fresh process: one audit run, its costs and its peak memory sent back."""
    from offpay.audit.auditor import audit

    try:
        wall = time.perf_counter()
        cpu = time.process_time()
        report = audit(sources, state)
        cpu_s = time.process_time() - cpu
        wall_s = time.perf_counter() - wall
        from offpay.bank.verifier import Verifier

        Verifier(sources.root_der).close()  # the pool's workers exit: their CPU is counted
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        conn.send(
            {
                "wall_s": wall_s,
                "cpu_s": cpu_s,
                "workers_cpu_s": children.ru_utime + children.ru_stime,
                "peak_rss_mib": own_peak_rss_bytes() / 2**20,
                "findings": [f.line() for f in report.findings],
                "payments": report.payments,
                "in_flight": report.in_flight,
                "rows": report.rows,
            }
        )
    except Exception as exc:  # a benchmark reports a failed run; it does not hide it
        conn.send({"error": repr(exc)})
    conn.close()


def own_peak_rss_bytes() -> int:
    """This process's peak resident memory since it started its program (Linux VmHWM).
    ``ru_maxrss`` is kept across exec: a spawned child would report the peak of the
    backlog builder it was forked from."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss_bytes()


def audit_in_fresh_process(sources: Any, state: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_audit_child, args=(sender, sources, state))
    process.start()
    sender.close()
    try:
        result: dict[str, Any] = receiver.recv()
    except EOFError:
        result = {"error": f"the audit process died (exit code {process.exitcode})"}
    process.join()
    return result


def run(
    backend: str,
    plan: BacklogPlan,
    *,
    urls: Mapping[str, str] | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Build and settle a backlog on ``backend`` (SQLite files in a temporary folder unless
    ``urls`` is given), audit it twice (full, then resumed), and return the figures."""
    from offpay.audit.sources import Sources

    with tempfile.TemporaryDirectory(prefix="offpay-bench-audit-") as folder:
        urls = dict(urls) if urls is not None else sqlite_urls(Path(folder))
        n = plan.payments
        say(f"audit on {backend}: settling a backlog of {n:,} payments to audit")
        start = time.perf_counter()
        root, currency = build_backlog(urls, plan, say)
        backlog_s = time.perf_counter() - start
        sources = Sources(
            root,
            currency,
            urls["central-bank"],
            {k: v for k, v in urls.items() if k != "central-bank"},
        )
        state = Path(folder) / "audit-state.sqlite"
        say(f"audit on {backend}: auditing {n:,} payments in a fresh process")
        first = audit_in_fresh_process(sources, state)
        if "error" in first:
            return {"backend": backend, "payments": n, "error": first["error"]}
        say(
            f"audit on {backend}: {n:,} payments in {first['wall_s']:,.1f} s "
            f"({n / first['wall_s']:,.0f}/s), peak {first['peak_rss_mib']:,.0f} MiB, "
            f"{len(first['findings'])} findings"
        )
        again = audit_in_fresh_process(sources, state)
        state_mib = state.stat().st_size / 2**20
    cpu = first["cpu_s"] + first["workers_cpu_s"]
    return {
        "backend": backend,
        "payments": n,
        "backlog_s": round(backlog_s, 1),
        "audit_s": round(first["wall_s"], 2),
        "payments_per_s": round(n / first["wall_s"], 1),
        "cpu_us_per_payment": round(1e6 * cpu / n, 1),
        "main_cpu_us_per_payment": round(1e6 * first["cpu_s"] / n, 1),
        "workers_cpu_us_per_payment": round(1e6 * first["workers_cpu_s"] / n, 1),
        "peak_rss_mib": round(first["peak_rss_mib"], 1),
        "rows_read": first["rows"],
        "audited_payments": first["payments"],
        "in_flight": first["in_flight"],
        "findings": first["findings"],
        "clean": not first["findings"] and first["payments"] == n,
        "resumed_s": round(again.get("wall_s", 0.0), 2),
        "resumed_rows_read": again.get("rows"),
        "resumed_findings": again.get("findings"),
        "state_mib": round(state_mib, 1),
    }
