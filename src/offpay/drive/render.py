"""``offpay books`` as rich tables: the central bank, each intermediary's customers with their
wallets and devices, the pending queue, anomalies, losses with their bounds, and the
conservation line. Reads only the JSON-ready books (:meth:`Workbench.books`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from offpay.money import Money


def render_books(console: Console, books: dict[str, Any]) -> None:
    cur = books["currency"]

    def m(minor: int | None) -> str:
        return "" if minor is None else str(Money(minor, cur))

    central = books.get("central_bank")
    if central is not None:
        table = Table(title="central bank", title_justify="left", header_style="bold")
        for col in ("intermediary", "reserve", "customers hold"):
            table.add_column(col, justify="left" if col == "intermediary" else "right")
        for name, p in central["positions"].items():
            table.add_row(name, m(p["reserve"]), m(p["holdings"]))
        console.print(table)
        pool = central["pool"]
        console.print(
            f"issued {m(central['issued'])}; pool {m(pool['size'])} "
            f"(available {m(pool['available'])}, lent out {m(pool['outstanding'])}, "
            f"{pool['loans']} loans); notarised payments {central['notarised']}; "
            f"revoked devices {len(central['revoked'])}"
        )
    devices = books["devices"]
    for bank, b in books["banks"].items():
        policy = b.get("policy") or {}
        table = Table(
            title=f"{bank}  (limits policy v{policy.get('version', '?')}, "
            f"liquidity {policy.get('liquidity', '?')})",
            title_justify="left",
            header_style="bold",
        )
        columns = ("customer", "online", "shadow", "merchant", "device", "status", "last sync")
        for col in (*columns, "device shows"):
            table.add_column(
                col, justify="right" if col in ("online", "shadow", "merchant") else "left"
            )
        for c in b["customers"]:
            w = c["wallets"]
            shown = devices.get(c["name"], {})
            for i, d in enumerate(c["devices"] or [{}]):
                show = ""
                if d.get("id") and shown.get("device") == d.get("id"):
                    show = (
                        shown["error"]
                        if "error" in shown
                        else f"{m(shown['balance'])}, {shown['unsynced']} unsynced"
                    )
                first = i == 0
                table.add_row(
                    c["name"] if first else "",
                    m(w.get("online")) if first else "",
                    m(w.get("shadow")) if first else "",
                    m(w.get("merchant")) if first else "",
                    d.get("id", ""),
                    d.get("status", ""),
                    _sync_time(d.get("last_sync")) if d.get("id") else "",
                    show,
                )
        console.print(table)
        _rows(
            console,
            f"{bank}: pending queue",
            b["pending"],
            ("tx_id", "direction", "device", "counterparty", "amount", "since"),
            m,
        )
        _rows(console, f"{bank}: anomalies", b["anomalies"], ("kind", "device", "detail"), m)
        _rows(
            console,
            f"{bank}: losses",
            b["losses"],
            ("device", "tx_id", "amount", "bound", "detail"),
            m,
        )
        _rows(
            console, f"{bank}: open shortfalls", b["shortfalls"], ("tx_id", "device", "amount"), m
        )
    c = books["conservation"]
    line = (
        f"issued {m(c['issued'])} {'==' if c['issued'] == c['held'] else '!='} held {m(c['held'])} "
        f"(reserves {m(c['reserves'])}, wallets {m(c['wallets'])}, in transit "
        f"{m(c['in_transit'])}, tokens {m(c['tokens'])}, pool {m(c['pool'])})"
    )
    verdict = "[green]conserved[/green]" if c["balanced"] else "[red]NOT CONSERVED[/red]"
    console.print(f"{verdict}: {line}")
    for problem in c["problems"]:
        console.print(f"[red]{problem}[/red]")


def _rows(
    console: Console, title: str, rows: list[dict[str, Any]], cols: tuple[str, ...], m: Any
) -> None:
    if not rows:
        console.print(f"{title}: none")
        return
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(
            *(
                m(row[col])
                if col in ("amount", "bound")
                else str(row[col] if row[col] is not None else "")
                for col in cols
            )
        )
    console.print(table)


def _sync_time(iso: str | None) -> str:
    """When the intermediary last answered the device's sync, to the second, in UTC."""
    return "never" if iso is None else f"{iso[:19].replace('T', ' ')} UTC"
