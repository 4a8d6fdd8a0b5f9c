"""``offpay network init``: a new network from options and a TOML settings file (options win);
see :mod:`offpay.service.network_settings` for the keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from offpay.cli_limits import limits_given, with_limit_options
from offpay.cli_support import refusals
from offpay.crypto.keys import Algorithm
from offpay.wire.messages import Liquidity

BanksOption = Annotated[
    list[str] | None,
    typer.Option(
        "--banks",
        help="An intermediary of a new network; repeat for more: --banks bank-a --banks bank-b "
        "(default: bank-a and bank-b).",
    ),
]
DEFAULT_BANKS = ("bank-a", "bank-b")


def bank_names(banks: list[str] | None) -> list[str]:
    """The intermediaries given with --banks; a value may also list several, comma-separated
    (--banks bank-a,bank-b), as earlier versions took them."""
    if banks is None:
        return list(DEFAULT_BANKS)
    return [name.strip() for value in banks for name in value.split(",") if name.strip()]


@with_limit_options
def network_init(
    data: Annotated[
        Path, typer.Option("--data", help="The network's data folder (created if missing).")
    ],
    config: Annotated[
        Path | None,
        typer.Option(help="A TOML file with the same keys as these options (options win)."),
    ] = None,
    banks: BanksOption = None,
    algorithm: Annotated[
        Algorithm | None,
        typer.Option(help="Signature algorithm of every key (default ed25519)."),
    ] = None,
    liquidity: Annotated[
        Liquidity | None,
        typer.Option(help="What happens when a payer's shadow wallet is short (default queue)."),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(help='The central bank\'s liquidity pool, e.g. "SEK 100000" (default none).'),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="http:// URLs instead of https:// (local debugging only; the services then "
            "start only with --insecure-http, warned every time). TLS certificates are made "
            "either way.",
        ),
    ] = False,
    *,
    limit_options: dict[str, object],
) -> None:
    """Create a network in a data folder: keys, certificates, admissions, one embedded SQLite
    database per party, free loopback ports; its liquidity policy, pool and limits (one option
    per limit of the policy; an optional limit not given means no limit); the TLS CA
    (certified by the network root) and each service's TLS certificate (docs/tls.md)."""
    from offpay.service.datadir import init_network
    from offpay.service.network_settings import network_settings

    with refusals():
        options: dict[str, object] = {
            "banks": None if banks is None else bank_names(banks),
            "algorithm": algorithm,
            "liquidity": liquidity,
            "pool": pool,
            **limits_given(limit_options),
        }
        settings = network_settings(config, options)
        network = init_network(
            data,
            settings.banks,
            algorithm=settings.algorithm,
            liquidity=settings.liquidity,
            pool=settings.pool,
            limits=settings.limits.given(),
            insecure_http=insecure_http,
        )
    for name, url in network.urls.items():
        typer.echo(f"{name}: {url}")


def network_disclose(
    data: Annotated[Path, typer.Option("--data", help="The network's data folder.")],
    payment: Annotated[
        str,
        typer.Option(
            "--payment",
            help="The payment's pseudonym as the notary recorded it (32 hex digits; "
            "`offpay books` shows the newest).",
        ),
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why the evidence is needed (logged).")],
) -> None:
    """The central bank's operator asks the intermediary that notarised a payment for its
    evidence, in a dispute: a request signed by the notary, sent with the central bank's TLS
    certificate, logged by the intermediary; the answer is checked against the notary's
    commitment and the devices' signatures (docs/notary-privacy.md)."""
    import json

    from offpay.central.disclosure import ask_disclosure
    from offpay.errors import OffpayError
    from offpay.service.client import HttpNetwork
    from offpay.service.datadir import CENTRAL, load_network, open_central
    from offpay.service.tls import network_client

    with refusals():
        try:
            pseudonym = bytes.fromhex(payment.strip())
        except ValueError:
            pseudonym = b""
        if len(pseudonym) != 16:
            raise OffpayError("a payment's pseudonym is 32 hex digits", code="cli.bad_pseudonym")
        network = load_network(data)
        central = open_central(network)
        banks = {name: url for name, url in network.urls.items() if name != CENTRAL}
        transport = HttpNetwork(banks, client=network_client(network, CENTRAL))
        try:
            disclosed = ask_disclosure(central, transport.send, pseudonym, reason)
        finally:
            transport.close()
            central.db.dispose()
    p = disclosed.payment
    typer.echo(
        json.dumps(
            {
                "pseudonym": pseudonym.hex(),
                "disclosed_by": disclosed.institution,
                "refund": disclosed.refund,
                "tx_id": p.tx_id.hex(),
                "payer": p.sender,
                "payee": p.receiver,
                "amount": p.amount.minor,
                "currency": p.amount.currency,
                "evidence": disclosed.signed.digest.hex(),
            },
            indent=2,
        )
    )
