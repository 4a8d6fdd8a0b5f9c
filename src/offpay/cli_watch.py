"""`offpay network watchdog-clear` and `offpay network publish-liabilities`: an operator's
commands against a running network's back office (issue 18), with the party's admin token
from the network's folder. A refusal is one line and exit status 2."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from offpay.cli_support import UsageError, refusals

DataOption = Annotated[
    Path, typer.Option("--data", help="The network's data folder (see `offpay network init`).")
]


def _post(data: Path, party: str, path: str, body: dict[str, Any]) -> Any:
    from offpay.service.client import AdminClient
    from offpay.service.datadir import load_network
    from offpay.service.tls import network_client

    network = load_network(data)
    if party not in network.urls:
        known = ", ".join(network.urls)
        raise UsageError(f"--party {party}: this network's parties are {known}")
    client = AdminClient(
        network.urls[party],
        network.admin_token(party),
        retries=1,
        client=network_client(network, party),
    )
    try:
        return client.post(path, body, key=secrets.token_hex(16))
    finally:
        client.close()


def network_watchdog_clear(
    data: DataOption,
    party: Annotated[str, typer.Option(help="Whose watchdog: central-bank or an intermediary.")],
    reason: Annotated[str, typer.Option(help="Why, for the log (required with --force).")] = "",
    force: Annotated[
        bool,
        typer.Option("--force", help="Clear even though the books still disagree."),
    ] = False,
) -> None:
    """Clear a party's watchdog alarm once its books agree again: the service re-runs its full
    check first and refuses while they still disagree (unless --force, with a --reason)."""
    with refusals():
        if force and not reason.strip():
            raise UsageError("--force needs a --reason, for the log")
        answer = _post(data, party, "/v1/admin/watchdog/clear", {"reason": reason, "force": force})
    typer.echo(json.dumps(answer))


def network_publish_liabilities(
    data: DataOption,
    bank: Annotated[str, typer.Option(help="The intermediary that publishes, e.g. bank-a.")],
) -> None:
    """Publish an intermediary's signed liabilities commitment for a new period (a Merkle sum
    tree over its customers' wallets, whose total must equal its holdings at the central
    bank); prints the period, total and root."""
    with refusals():
        answer = _post(data, bank, "/v1/admin/liabilities/publish", {})
    typer.echo(json.dumps(answer))
