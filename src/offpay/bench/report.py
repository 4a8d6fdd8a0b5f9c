"""The figures as a Rich table, as JSON, and as the generated part of BENCHMARKS.md.

BENCHMARKS.md mixes generated figures and written analysis: only the part between
:data:`BEGIN` and :data:`END` is replaced, so a new run never erases the analysis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from offpay.bench.runner import db_ceiling, settlement_ceiling

BEGIN = "<!-- offpay bench: generated figures begin -->"
END = "<!-- offpay bench: generated figures end -->"


def _n(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None, ceiling: float | None) -> str:
    if value is None or not ceiling:
        return "–"
    r = value / ceiling
    return f"{r:.3f}" if r >= 0.001 else f"{r:.1e}"


def _met(flag: bool | None) -> str:
    return {True: "met", False: "missed", None: "not measured"}[flag]


def _measured(target: dict[str, Any]) -> str:
    if target["measured"] is None:
        return f"– ({target['unit']})" if "(" in target["unit"] else "–"
    return f"{target['measured']:,} {target['unit']}"


def _hpke_terms(o: dict[str, Any]) -> str:
    """The HPKE terms of an offline flow's ceiling, and its ratio to the signatures alone."""
    if "hpke_seals" not in o:
        return ""
    return (
        f" + {o['hpke_keys']} HPKE keys, {o['hpke_seals']} seals, {o['hpke_opens']} opens of "
        f"{_n(o['sealed_bytes'])} B; signatures alone {_n(o['signature_ceiling_per_s'])}/s, "
        f"ratio {o['ratio_to_signature_ceiling']:.3f}"
    )


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, figure, ceiling, ratio, note) for every figure of the run."""
    out: list[tuple[str, str, str, str, str]] = []
    ceil = results.get("ceilings") or {}
    cores = ceil.get("cores")
    for s in ceil.get("signatures", []):
        out.append(
            (
                f"ceiling: {s['algorithm']} verify, 1 core",
                f"{_n(s['verifies_per_s'])}/s",
                "",
                "",
                f"sign {_n(s['signs_per_s'])}/s",
            )
        )
    if ceil.get("hpke"):
        h = ceil["hpke"]
        out.append(
            (
                f"ceiling: HPKE X25519 open, {_n(h['plain_bytes'])} B, 1 core",
                f"{_n(h['opens_per_s'])}/s",
                "",
                "",
                f"seal {_n(h['seals_per_s'])}/s; key generation {_n(h['keys_per_s'])}/s",
            )
        )
    for d in ceil.get("database", []):
        out.append(
            (
                f"ceiling: {d['backend']} insert, 1000 rows/commit",
                f"{_n(d['rows_per_s_batched'])} rows/s",
                "",
                "",
                f"one row per commit: {_n(d['rows_per_s_commit_each'])} rows/s",
            )
        )
    for r in results.get("audit") or []:
        name = f"audit {r['backend']}, N={r['payments']:,}"
        if "error" in r:
            out.append((name, "failed", "", "", r["error"][:80]))
            continue
        out.append(
            (
                name,
                f"{_n(r['payments_per_s'])} payments/s",
                "",
                "",
                f"{_n(r['cpu_us_per_payment'])} µs CPU per payment (its verification workers "
                f"included), peak {_n(r['peak_rss_mib'])} MiB, "
                f"{'clean' if r['clean'] else 'NOT clean'}; resumed run {r['resumed_s']} s",
            )
        )
    verify_ceiling = settlement_ceiling(results)
    for r in results.get("settlement") or []:
        name = f"settlement {r['backend']}, N={r['payments']:,}"
        if "error" in r:
            out.append((name, "failed", "", "", r["error"][:80]))
            continue
        db = db_ceiling(results, r["backend"])
        pp = r["per_payment"]
        out.append(
            (
                name,
                f"{_n(r['payments_per_s'], 1)} payments/s",
                f"{_n(verify_ceiling)}/s (2 verifies × {cores} cores)",
                _ratio(r["payments_per_s"], verify_ceiling),
                f"{_n(r['us_per_payment'])} µs/payment ({_n(r.get('cpu_us_per_payment'))} µs "
                f"CPU of the settling process{_workers(r)}); peak RSS {_n(r['peak_rss_mib'])} MiB "
                f"(+{_n(r['rss_growth_settle_mib'], 1)} while settling); "
                f"{pp['commits']} commits, {pp['signatures_verified']} verifies per payment "
                "in that process; "
                f"÷ DB ceiling {_ratio(r['payments_per_s'], db and db['rows_per_s_batched'])}; "
                f"exactly once: {'yes' if r['checks']['ok'] else 'NO'}",
            )
        )
    for o in results.get("offline") or []:
        out.append(
            (
                f"offline {o['flow']}, {o['algorithm']}",
                f"{_n(o['payments_per_s'], 1)} payments/s/core",
                f"{_n(o['crypto_ceiling_per_s'])}/s",
                f"{o['ratio_to_ceiling']:.3f}",
                f"{o['signatures_made']} signs + {o['signatures_verified']} verifies"
                f"{_hpke_terms(o)}; {_n(o['us_per_payment'])} µs CPU; "
                f"wall {_n(o.get('wall_payments_per_s'))}/s",
            )
        )
    for s in results.get("storage") or []:
        out.append(
            (
                f"storage {s['algorithm']}",
                f"card {_n(s['card_bytes_at_limit'])} B at {s['card_limit_payments']} payments",
                "",
                "",
                f"terminal module {_n(s['terminal_module_bytes_at_limit'])} B + app "
                f"{_n(s['terminal_app_sealed_bytes_at_limit'])} B sealed at "
                f"{s['terminal_limit_payments']}; payment {_n(s['payment_bytes'])} B; "
                f"card↔terminal {_n(s['card_terminal_apdu_bytes_per_payment'])} B/payment",
            )
        )
    for t in results.get("tokens") or []:
        out.append(
            (
                f"token verify {t['algorithm']}, {t['ancestors']} "
                f"ancestor{'' if t['ancestors'] == 1 else 's'}",
                f"{t['verify_ms']:.2f} ms",
                f"{t['signatures_ms']:.2f} ms ({t['signatures']} signatures)",
                f"{t['signatures_ms'] / t['verify_ms']:.3f}" if t["verify_ms"] else "–",
                f"cold (every signature); overhead {t['overhead_pct']:.0f} %",
            )
        )
        if "warm_verify_ms" in t:
            out.append(
                (
                    f"  warm: parent verified before, {t['ancestors']} "
                    f"ancestor{'' if t['ancestors'] == 1 else 's'}",
                    f"{t['warm_verify_ms']:.2f} ms",
                    f"{t['warm_signatures_ms']:.2f} ms ({t['warm_signatures']} signatures)",
                    "",
                    "only the new hop's signatures verified",
                )
            )
    out += _sim_rows(results.get("sim") or {})
    return out


def _sim_rows(sim: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The population simulator's runs: the fast one at scale, the real one it is held to."""
    out: list[tuple[str, str, str, str, str]] = []
    titles = {"fast": "sim fast executor", "real": "sim real executor"}
    titles["tokens"] = "sim fast executor, token scheme"
    for name, title in titles.items():
        r = sim.get(name)
        if not r:
            continue
        if "error" in r:
            out.append((title, "failed", "", "", r["error"][:80]))
            continue
        out.append(
            (
                f"{title}, {r['people']:,} people, {r['outage_hours']:g} h outage",
                f"{_n(r['payments_per_s_cpu'])} payments/s (CPU)",
                "",
                "",
                f"wall {_n(r['payments_per_s_wall'])}/s; {_n(r['payments'])} payments, "
                f"{_n(r['events'])} events in {_n(r['wall_s'], 1)} s wall, {_n(r['cpu_s'], 1)} s "
                f"CPU; {_n(r['cpu_us_per_payment'], 2)} µs CPU per payment; "
                f"peak RSS {_n(r['peak_rss_mib'])} MiB",
            )
        )
    if sim.get("ratio") is not None:
        out.append(
            (
                "sim: real ÷ simulated cost per payment",
                f"{sim['ratio']:,.1f}×",
                "",
                "",
                f"CPU per payment; scenario {sim.get('source', '')}",
            )
        )
    return out


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table(title="offpay benchmarks", show_lines=False)
    for column in ("benchmark", "figure", "ceiling", "ratio", "notes"):
        table.add_column(column, overflow="fold")
    for row in rows(results):
        table.add_row(*row)
    console.print(table)
    targets = Table(title="targets")
    for column in ("target", "wanted", "measured", "result"):
        targets.add_column(column, overflow="fold")
    for t in results.get("targets", []):
        style = {True: "green", False: "red", None: "yellow"}[t["met"]]
        targets.add_row(
            t["target"],
            _n(t["wanted"], 1),
            _measured(t),
            f"[{style}]{_met(t['met'])}[/{style}]",
        )
    console.print(targets)


LISTS = ("settlement", "profile", "offline", "storage", "tokens", "audit", "errors")


def _workers(run: dict[str, Any]) -> str:
    """The verification workers' CPU per payment, when they ran."""
    cpu = run.get("workers_cpu_us_per_payment")
    return f" + {_n(cpu)} µs of its verification workers" if cpu else ""


def merge(results: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold the figures of earlier runs (their JSON files) into ``results``: sections measured
    now win, lists of runs are joined, targets are judged again on the whole. So long runs can
    be made separately (SQLite and PostgreSQL side by side) and reported as one."""
    from offpay.bench.runner import targets

    merged = dict(results)
    for old in earlier:
        for key in LISTS:
            if old.get(key):
                merged[key] = [*(merged.get(key) or []), *old[key]]
        for key in ("ceilings", "sim"):
            if not merged.get(key) and old.get(key):
                merged[key] = old[key]
        pg = (old.get("machine") or {}).get("postgresql")
        machine = merged.get("machine") or {}
        if machine.get("postgresql") in (None, "not measured") and pg:
            merged["machine"] = {**machine, "postgresql": pg}
        config = dict(merged.get("config") or {})
        old_config = old.get("config") or {}
        for key in ("sizes", "backends"):
            config[key] = sorted({*config.get(key, []), *old_config.get(key, [])})
        merged["config"] = config
    merged["targets"] = targets(merged)
    return merged


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def markdown(results: dict[str, Any]) -> str:
    """The generated section: machine, figures with ceilings and ratios, targets."""
    m = results.get("machine", {})
    lines = [
        BEGIN,
        "",
        f"Measured {m.get('date', '')} with `offpay bench` "
        f"(sizes {', '.join(f'{n:,}' for n in results['config']['sizes'])}; "
        f"backends {', '.join(results['config']['backends'])}).",
        *(f"\n**Note.** {note}" for note in results["config"].get("notes") or []),
        "",
        "**Machine.** "
        f"{m.get('cpu')}, {m.get('cores')} cores usable, {m.get('ram_gib')} GiB RAM, "
        f"{m.get('os')}; {m.get('python')}; SQLite {m.get('sqlite')}; "
        f"PostgreSQL {m.get('postgresql')}; {m.get('openssl')} "
        f"(cryptography {m.get('cryptography')}); SQLAlchemy {m.get('sqlalchemy')}; "
        f"psycopg {m.get('psycopg')}.",
        "",
        "| benchmark | figure | ceiling | ratio | notes |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(c.replace('|', '/') for c in row)} |" for row in rows(results)]
    lines += ["", "| target | wanted | measured | result |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        lines.append(
            f"| {t['target']} | {_n(t['wanted'], 1)} | {_measured(t)} | {_met(t['met'])} |"
        )
    for r in results.get("settlement") or []:
        lines += _growth(r)
    for p in results.get("profile") or []:
        if "error" in p:
            continue
        lines += [
            "",
            f"**Where settlement time goes on {p['backend']}** ({p['profiler']}, "
            f"{p['payments']:,} payments, {_n(p['us_per_payment'])} µs per payment "
            "under the profiler):",
            "",
            "| kind of work | share | µs per payment |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k['kind']} | {k['share_pct']} % | {_n(k['us_per_payment'])} |" for k in p["kinds"]
        ]
        lines += ["", "| function (self time) | share | µs per payment |", "|---|---|---|"]
        lines += [
            f"| `{f['function']}` | {f['share_pct']} % | {_n(f['us_per_payment'])} |"
            for f in p["top_functions"][:10]
        ]
    if results.get("errors"):
        lines += [
            "",
            "Errors: " + "; ".join(f"{e['section']}: {e['error']}" for e in results["errors"]),
        ]
    lines += ["", END]
    return "\n".join(lines)


GROWTH_ROWS = 10


def _growth(run: dict[str, Any]) -> list[str]:
    """How a backlog settled in waves cost as the tables grew: waves summed in up to ten
    groups, in the order they settled."""
    waves = run.get("waves_detail") or []
    if len(waves) < 2:
        return []
    size = -(-len(waves) // GROWTH_ROWS)
    lines = [
        "",
        f"**Settlement on {run['backend']} of {run['payments']:,} payments, by what the tables "
        f"already held** ({len(waves)} waves; the first wave's workers include their start-up):",
        "",
        "| tables held (payments settled) | payments | payments/s (wall) | CPU µs per payment: "
        "settling process | + verification workers | = total | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in range(0, len(waves), size):
        group = waves[i : i + size]
        n = sum(w["payments"] for w in group)
        wall = sum(w["settle_s"] for w in group)
        cpu = sum(w["cpu_us_per_payment"] * w["payments"] for w in group) / n
        workers = sum(w["workers_cpu_us_per_payment"] * w["payments"] for w in group) / n
        load = sum(w["load_average"] for w in group) / len(group)
        lines.append(
            f"| {group[0]['settled_before']:,}–{group[0]['settled_before'] + n:,} | {n:,} | "
            f"{_n(n / wall if wall else None)} | {_n(cpu)} | {_n(workers)} | "
            f"{_n(cpu + workers)} | {load:.1f} |"
        )
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """Replace the generated section of ``path`` (create the file if it does not exist)."""
    section = markdown(results)
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + section + tail)
            return
        path.write_text(text.rstrip() + "\n\n" + section + "\n")
        return
    path.write_text("# Benchmarks\n\nFigures written by `offpay bench`.\n\n" + section + "\n")
