"""Runs the whole suite and gathers every figure, with its ceiling, into one dictionary.

Settlement runs (and the settlement profile) each run in a fresh process, so that the peak
memory of one backlog is not the leftover of another and a crash costs one figure, not the
run. PostgreSQL is a private server started for the run (:mod:`offpay.store.postgres`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from offpay.bench import ceilings, machine, offline, storage, tokens
from offpay.bench import sim as population
from offpay.bench.settlement import BacklogPlan
from offpay.crypto.keys import Algorithm

Say = Callable[[str], None]

QUICK_SIZES = (1_000,)
FULL_SIZES = (10_000, 100_000, 1_000_000)
SIGNATURES_PER_PAYMENT = 2  # the payer card's and the payee's: what makes a payment evidence
SECTIONS = ("ceilings", "offline", "storage", "tokens", "settlement", "profile", "sim", "audit")


@dataclass
class Options:
    sizes: Sequence[int] = QUICK_SIZES
    backends: Sequence[str] = ("sqlite", "postgres")
    algorithms: Sequence[Algorithm] = tuple(Algorithm)
    sections: Sequence[str] = SECTIONS
    seconds: float = 1.0  # per micro-benchmark (signature and insert rates)
    offline_payments: int = 200
    token_depths: Sequence[int] = tokens.DEPTHS
    profile_payments: int = 500
    isolate: bool = True  # settlement in a fresh process per run
    per_card: int = 100
    per_terminal: int = 250
    resync_cards: int = 10
    wave: int = 10_000  # payments made and then settled at a time
    sim_people: int = population.PEOPLE  # the country of the population simulator
    sim_real_people: int = population.REAL_PEOPLE  # the same scenario on the real protocol
    sim_scenario: Path | None = None  # default: scenarios/country-outage.toml, or built in
    notes: list[str] = field(default_factory=list)


def steps(options: Options) -> int:
    """How many steps :func:`run` announces to its ``step`` callback: one per section, one per
    settlement run and one per profile run (a progress bar's length)."""
    fixed = sum(s in options.sections for s in ("ceilings", "offline", "storage", "tokens", "sim"))
    runs = len(options.backends) * len(options.sizes) if "settlement" in options.sections else 0
    profiles = len(options.backends) if "profile" in options.sections else 0
    audits = len(options.backends) * len(options.sizes) if "audit" in options.sections else 0
    return fixed + runs + profiles + audits


def run(
    options: Options,
    say: Say,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    step: Say | None = None,
) -> dict[str, Any]:
    """Every benchmark of ``options.sections``; the result is what the JSON file holds.
    ``checkpoint`` gets the figures so far after every long run, so that a run stopped after
    hours keeps what it measured; ``step`` is told as each of the :func:`steps` begins."""
    results: dict[str, Any] = {"config": _config(options), "errors": []}
    begin = step if step is not None else (lambda _what: None)

    def save() -> None:
        if checkpoint is not None:
            checkpoint({**results, "targets": targets(results)})

    with _postgres(options, say, results) as pg:
        pg_version = pg.version() if pg is not None else None
        results["machine"] = machine.describe(pg_version)
        if "ceilings" in options.sections:
            begin("ceilings")
            say("[bold]ceilings[/bold]: signatures and bare database inserts")
            results["ceilings"] = _guard(results, "ceilings", lambda: _ceilings(options, pg))
        if "offline" in options.sections:
            begin("offline payments")
            say("[bold]offline payments[/bold] through the full protocol")
            results["offline"] = _guard(results, "offline", lambda: _offline(options, say))
        if "storage" in options.sections:
            begin("device storage")
            say("[bold]device storage[/bold] and bytes on the wire")
            results["storage"] = _guard(
                results, "storage", lambda: [storage.measure(a) for a in options.algorithms]
            )
        if "tokens" in options.sections:
            begin("token verification")
            say("[bold]token verification[/bold]")
            results["tokens"] = _guard(
                results,
                "tokens",
                lambda: [
                    row
                    for a in options.algorithms
                    for row in tokens.measure(a, options.token_depths, say=say)
                ],
            )
        save()
        if "settlement" in options.sections:
            results["settlement"] = []
            for backend in options.backends:
                for n in options.sizes:
                    begin(f"settlement of {n:,} on {backend}")
                    if backend == "sqlite" or pg is not None:
                        results["settlement"].append(_settle(options, backend, n, pg, say))
                        save()
        if "profile" in options.sections:
            results["profile"] = []
            for backend in options.backends:
                begin(f"profile on {backend}")
                if backend == "sqlite" or pg is not None:
                    results["profile"].append(_profile(options, backend, pg, say))
                    save()
        if "audit" in options.sections:
            results["audit"] = []
            for backend in options.backends:
                for n in options.sizes:
                    begin(f"audit of {n:,} on {backend}")
                    if backend == "sqlite" or pg is not None:
                        results["audit"].append(_audit(options, backend, n, pg, say))
                        save()
        if "sim" in options.sections:
            begin("population simulator")
            say("[bold]population simulator[/bold]: a country through an outage, fast vs real")
            results["sim"] = _guard(results, "sim", lambda: _sim(options, say, results))
            save()
    results["targets"] = targets(results)
    return results


def _config(options: Options) -> dict[str, Any]:
    return {
        "sizes": list(options.sizes),
        "backends": list(options.backends),
        "algorithms": [a.value for a in options.algorithms],
        "sections": list(options.sections),
        "seconds": options.seconds,
        "offline_payments": options.offline_payments,
        "per_card": options.per_card,
        "per_terminal": options.per_terminal,
        "wave": options.wave,
        "sim_people": options.sim_people,
        "sim_real_people": options.sim_real_people,
        "notes": list(options.notes),
    }


def _guard(results: dict[str, Any], section: str, work: Callable[[], Any]) -> Any:
    """A failed section is reported in the results; the other sections still run."""
    try:
        return work()
    except Exception as exc:
        results["errors"].append({"section": section, "error": repr(exc)})
        traceback.print_exc()
        return None


@contextlib.contextmanager
def _postgres(options: Options, say: Say, results: dict[str, Any]) -> Iterator[Any]:
    """A private PostgreSQL server if any section needs one, else None."""
    wanted = "postgres" in options.backends and any(
        s in options.sections for s in ("ceilings", "settlement", "profile")
    )
    if not wanted:
        yield None
        return
    from offpay.store.postgres import DatabaseUnavailable, temporary_postgres

    try:
        server_cm = temporary_postgres(say=lambda text: say(f"  {text}"))
        server = server_cm.__enter__()
    except DatabaseUnavailable as exc:
        say(f"[red]PostgreSQL unavailable[/red]: {exc}")
        results["errors"].append({"section": "postgres", "error": str(exc)})
        yield None
        return
    try:
        yield server
    finally:
        server_cm.__exit__(None, None, None)


def _ceilings(options: Options, pg: Any) -> dict[str, Any]:
    signatures = [asdict(ceilings.signature_rate(a, options.seconds)) for a in options.algorithms]
    hpke = asdict(ceilings.hpke_rate(seconds=options.seconds))
    database = [asdict(ceilings.sqlite_insert_rate(options.seconds))]
    if pg is not None:
        url = pg.create_database("ceiling")
        database.append(asdict(ceilings.insert_rate("postgres", url, options.seconds)))
        pg.drop_database("ceiling")
    return {
        "cores": machine.usable_cores(),
        "signatures": signatures,
        "hpke": hpke,
        "database": database,
    }


def _offline(options: Options, say: Say) -> list[dict[str, Any]]:
    rows = []
    for algorithm in options.algorithms:
        rate = ceilings.signature_rate(algorithm, options.seconds)
        for name, flow in (
            ("card→terminal", offline.card_to_terminal),
            ("person-to-person", offline.person_to_person),
        ):
            say(f"  {name}, {algorithm.value}: {options.offline_payments:,} payments")
            row = flow(algorithm, options.offline_payments, say)
            count, flows = row.pop("_count"), row.pop("_flows")
            # HPKE of this flow's payment size, measured now, with the same library
            hpke = ceilings.hpke_rate(offline.sealed_bytes(count) or 1, options.seconds)
            ceiling = offline.crypto_ceiling(count, flows, rate, hpke)
            signatures_only = offline.crypto_ceiling(count, flows, rate)
            rows.append(
                {
                    "flow": name,
                    "algorithm": algorithm.value,
                    **row,
                    "hpke_rate": asdict(hpke),
                    "crypto_ceiling_per_s": round(ceiling, 1),
                    "ratio_to_ceiling": round(row["payments_per_s"] / ceiling, 3),
                    "signature_ceiling_per_s": round(signatures_only, 1),
                    "ratio_to_signature_ceiling": round(row["payments_per_s"] / signatures_only, 3),
                }
            )
    return rows


def _child(conn: Any, work: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    """Entry point of a settlement process: run, send the figures back."""
    try:
        result = work(*args, say=lambda text: print(text, flush=True))
    except Exception as exc:
        result = {"error": repr(exc)}
    conn.send(result)
    conn.close()


def _in_process(options: Options, work: Callable[..., dict[str, Any]], *args: Any) -> dict:
    if not options.isolate:
        return work(*args, say=lambda text: print(text, flush=True))
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, work, args))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = {"error": f"the benchmark process died (exit code {process.exitcode})"}
    process.join()
    return result


def _urls(pg: Any, prefix: str) -> dict[str, str] | None:
    if pg is None:
        return None
    return {name: pg.create_database(f"{prefix}-{name}") for name in ("central-bank", *_banks())}


def _banks() -> tuple[str, ...]:
    from offpay.bench.settlement import BANKS

    return BANKS


def _drop(pg: Any, urls: dict[str, str] | None) -> None:
    if pg is not None and urls is not None:
        for url in urls.values():
            pg.drop_database(url.rsplit("/", 1)[1])


def _settle(options: Options, backend: str, n: int, pg: Any, say: Say) -> dict[str, Any]:

    say(f"[bold]settlement[/bold] of {n:,} payments on {backend}")
    plan = BacklogPlan(
        n,
        options.per_card,
        options.per_terminal,
        resync_cards=options.resync_cards,
        wave=options.wave,
    )
    urls = _urls(pg, f"settle{n}") if backend == "postgres" else None
    try:
        result = _in_process(options, _settle_work, backend, plan, urls)
    finally:
        _drop(pg, urls)
    result.setdefault("backend", backend)
    result.setdefault("payments", n)
    return result


def _settle_work(
    backend: str, plan: BacklogPlan, urls: dict[str, str] | None, *, say: Say
) -> dict[str, Any]:
    from offpay.bench.settlement import run as settle

    return settle(backend, plan, urls=urls, say=say)


def _audit(options: Options, backend: str, n: int, pg: Any, say: Say) -> dict[str, Any]:
    """The independent auditor over a settled backlog of ``n`` (offpay.bench.audit)."""
    say(f"[bold]audit[/bold] of {n:,} settled payments on {backend}")
    plan = BacklogPlan(n, options.per_card, options.per_terminal, wave=options.wave)
    urls = _urls(pg, f"audit{n}") if backend == "postgres" else None
    try:
        result = _in_process(options, _audit_work, backend, plan, urls)
    finally:
        _drop(pg, urls)
    result.setdefault("backend", backend)
    result.setdefault("payments", n)
    return result


def _audit_work(
    backend: str, plan: BacklogPlan, urls: dict[str, str] | None, *, say: Say
) -> dict[str, Any]:
    from offpay.bench.audit import run as audit

    return audit(backend, plan, urls=urls, say=say)


def _profile(options: Options, backend: str, pg: Any, say: Say) -> dict[str, Any]:
    say(f"[bold]profile[/bold] of settlement on {backend}")
    urls = _urls(pg, "profile") if backend == "postgres" else None
    try:
        result = _in_process(options, _profile_work, backend, options.profile_payments, urls)
    finally:
        _drop(pg, urls)
    result.setdefault("backend", backend)
    return result


def _profile_work(
    backend: str, payments: int, urls: dict[str, str] | None, *, say: Say
) -> dict[str, Any]:
    from offpay.bench.profile import profile_settlement

    return profile_settlement(backend, payments, urls=urls, say=say)


def _sim(options: Options, say: Say, results: dict[str, Any]) -> dict[str, Any]:
    """The country on the fast executor, the same scenario with a few hundred people on the
    real one, and the country under the token scheme on the fast executor; each in a fresh
    process, so that each peak memory is its own."""
    data, source = population.country(options.sim_scenario)
    out: dict[str, Any] = {"source": source}
    for name, people in (("fast", options.sim_people), ("real", options.sim_real_people)):
        out[name] = _in_process(options, _sim_work, population.scaled(data, people), name)
        if "error" in out[name]:
            results["errors"].append({"section": f"sim {name}", "error": out[name]["error"]})
    out["ratio"] = population.compare(out["fast"], out["real"])
    tokens = population.under_tokens(population.scaled(data, options.sim_people))
    out["tokens"] = _in_process(options, _sim_work, tokens, "fast")
    if "error" in out["tokens"]:
        results["errors"].append({"section": "sim tokens", "error": out["tokens"]["error"]})
    return out


def _sim_work(data: dict[str, Any], executor: str, *, say: Say) -> dict[str, Any]:
    return population.measure(data, executor, say=say)


def _scale_targets(run: dict[str, Any], scheme: str) -> list[dict[str, Any]]:
    full = run["people"] >= population.PEOPLE and run["outage_hours"] >= 7 * 24
    basis = "" if full else f", {run['people']:,} people, {run['outage_hours']:g} h outage"
    rss = round(run["peak_rss_mib"] / 1024, 2)
    return [
        {
            "target": f"population simulator{scheme}: 1,000,000 people, 7-day outage, < 5 min",
            "wanted": population.WALL_TARGET_S,
            "measured": run["wall_s"],
            "unit": f"s wall ({run['events']:,} events{basis})",
            "met": run["wall_s"] < population.WALL_TARGET_S if full else None,
        },
        {
            "target": f"population simulator{scheme}: 1,000,000 people, 7-day outage, < 4 GiB",
            "wanted": population.RSS_TARGET_BYTES / 2**30,
            "measured": rss,
            "unit": f"GiB peak RSS{f' ({basis[2:]})' if basis else ''}",
            "met": rss < population.RSS_TARGET_BYTES / 2**30 if full else None,
        },
    ]


# -- ceilings applied to figures, and the targets of issue 7 ---------------------------------


def verify_rate(results: dict[str, Any], algorithm: str = "ed25519") -> float | None:
    for row in (results.get("ceilings") or {}).get("signatures", []):
        if row["algorithm"] == algorithm:
            return float(row["verifies_per_s"])
    return None


def settlement_ceiling(results: dict[str, Any]) -> float | None:
    """Payments per second the whole machine could settle if it only verified the two
    signatures that make a payment evidence: verifications/s per core × cores ÷ 2."""
    rate = verify_rate(results)
    if rate is None:
        return None
    cores = (results.get("ceilings") or {}).get("cores") or machine.usable_cores()
    return rate * cores / SIGNATURES_PER_PAYMENT


def db_ceiling(results: dict[str, Any], backend: str) -> dict[str, Any] | None:
    for row in (results.get("ceilings") or {}).get("database", []):
        if row["backend"] == backend:
            return row
    return None


def _cost(run: dict[str, Any], cpu: bool) -> float:
    if not cpu:
        return float(run["us_per_payment"])
    return float(run["cpu_us_per_payment"]) + float(run.get("workers_cpu_us_per_payment") or 0)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 7 with the figure that decides it; ``met`` is None when the
    figure was not measured in this run."""
    out: list[dict[str, Any]] = []
    ceiling = settlement_ceiling(results)
    runs = [r for r in results.get("settlement") or [] if "error" not in r]
    for backend in ("sqlite", "postgres"):
        mine = sorted((r for r in runs if r["backend"] == backend), key=lambda r: r["payments"])
        best = max((r["payments_per_s"] for r in mine), default=None)
        out.append(
            {
                "target": f"settlement on {backend} ≥ 50 % of the verification ceiling",
                "wanted": round(0.5 * ceiling, 1) if ceiling else None,
                "measured": best,
                "unit": "payments/s",
                "met": None if best is None or ceiling is None else best >= 0.5 * ceiling,
            }
        )
        # CPU time (the settling process and its verification workers) where every run has
        # it: on a shared machine the wall clock also measures whoever else ran at the time
        cpu = all(r.get("cpu_us_per_payment") for r in mine)
        by_n = {r["payments"]: _cost(r, cpu) for r in mine}
        if 10_000 in by_n and 1_000_000 in by_n:
            growth, basis = by_n[1_000_000] / by_n[10_000], "1M vs 10k"
        elif len(by_n) >= 2:
            lo, hi = min(by_n), max(by_n)
            growth, basis = by_n[hi] / by_n[lo], f"{hi:,} vs {lo:,} (1M not measured)"
        else:
            growth, basis = None, "needs two sizes"
        out.append(
            {
                "target": f"per-payment cost on {backend} at 1M within 1.2× of 10k",
                "wanted": 1.2,
                "measured": round(growth, 2) if growth else None,
                "unit": f"× ({basis}, "
                f"{'CPU µs of settling process and workers' if cpu else 'wall-clock µs'} "
                "per payment)",
                "met": None if growth is None or "not measured" in basis else growth <= 1.2,
            }
        )
    for row in results.get("offline") or []:
        out.append(
            {
                "target": f"{row['flow']} ({row['algorithm']}) ≥ 50 % of its crypto ceiling",
                "wanted": 0.5,
                "measured": row["ratio_to_ceiling"],
                "unit": "ratio (signatures and HPKE; signatures alone: "
                f"{row.get('ratio_to_signature_ceiling', '–')})",
                "met": row["ratio_to_ceiling"] >= 0.5,
            }
        )
    out += _sim_targets(results.get("sim") or {})
    for row in results.get("tokens") or []:
        if row["ancestors"] == 100:
            out.append(
                {
                    "target": f"token with 100 ancestors ({row['algorithm']}) verified < 10 ms",
                    "wanted": 10.0,
                    "measured": row["verify_ms"],
                    "unit": "ms",
                    "met": row["verify_ms"] < 10.0,
                }
            )
            out.append(
                {
                    "target": f"token verification overhead ({row['algorithm']}) ≤ 20 %",
                    "wanted": 20.0,
                    "measured": row["overhead_pct"],
                    "unit": "% above its signatures",
                    "met": row["overhead_pct"] <= 20.0,
                }
            )
    return out


def _sim_targets(sim: dict[str, Any]) -> list[dict[str, Any]]:
    """The simulator's scale targets, for each scheme: judged on a million people through a
    7-day outage only; a smaller run shows its figure, not measured against the target."""
    fast, real = sim.get("fast") or {}, sim.get("real") or {}
    out: list[dict[str, Any]] = []
    for run, scheme in ((fast, ""), (sim.get("tokens") or {}, " (token scheme)")):
        if run and "error" not in run:
            out += _scale_targets(run, scheme)
    if fast and real and "error" not in fast and "error" not in real:
        ratio = sim.get("ratio")
        out.append(
            {
                "target": "a simulated payment ≥ 50× cheaper than a real one (CPU)",
                "wanted": population.RATIO_TARGET,
                "measured": ratio,
                "unit": f"× ({real['cpu_us_per_payment']:,.0f} µs real at "
                f"{real['people']:,} people ÷ {fast['cpu_us_per_payment']:,.2f} µs simulated "
                f"at {fast['people']:,})",
                "met": None if ratio is None else ratio >= population.RATIO_TARGET,
            }
        )
    return out
