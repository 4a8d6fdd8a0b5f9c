"""``offpay network tls-renew`` and ``offpay network tls-certify-ca``: the network's TLS
certificates replaced while the services run (docs/tls.md). The services and clients read the
files again at their next connection; nothing is restarted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from offpay.cli_support import UsageError, refusals

DataOption = Annotated[
    Path, typer.Option("--data", help="The network's data folder (see `offpay network init`).")
]


def network_tls_renew(
    data: DataOption,
    party: Annotated[
        list[str] | None,
        typer.Option(help="A party whose certificate to renew; repeat for more (default all)."),
    ] = None,
    new_ca: Annotated[
        bool,
        typer.Option(
            "--new-ca",
            help="Issue them from a new TLS CA, certified by the network root (whose key must "
            "be in central-bank/); the old CA stays trusted until --retire-old-cas.",
        ),
    ] = False,
    retire_old_cas: Annotated[
        bool,
        typer.Option(
            "--retire-old-cas",
            help="Trust only the current TLS CA from now on (once no service uses an old one).",
        ),
    ] = False,
) -> None:
    """Issue services new TLS certificates (and, with --new-ca, a new TLS CA) while they run:
    each service and client uses the new files from its next connection."""
    from offpay.service.datadir import CENTRAL, load_network
    from offpay.service.keystore import load_credential
    from offpay.service.tls_pki import party_files, renew

    with refusals():
        network = load_network(data)
        names = list(network.urls) if party is None else party
        for name in names:
            network.party_folder(name)  # an unknown party is refused here, before any change
        if retire_old_cas and party is not None and not new_ca:
            raise UsageError("--retire-old-cas renews every party: leave out --party")
        root = load_credential(network.folder / CENTRAL, "root") if new_ca else None
        authority = renew(
            network.folder,
            CENTRAL,
            network.urls,
            names,
            dt.datetime.now(dt.UTC),
            new_ca_by=root,
            retire_old_cas=retire_old_cas,
        )
    from cryptography import x509

    for name in names:
        leaf = x509.load_pem_x509_certificates(party_files(network.folder, name)[1].read_bytes())[0]
        typer.echo(
            f"{name}: new TLS certificate {leaf.serial_number:x}, valid until "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    typer.echo(f"issued by {authority.certificate.subject.rfc4514_string()}")


def network_tls_certify_ca(
    data: DataOption,
    request: Annotated[
        Path,
        typer.Option(help="Your TLS CA's certificate signing request (PEM), from your PKI/HSM."),
    ],
    out: Annotated[Path, typer.Option(help="Where to write your CA's certificate (PEM).")],
) -> None:
    """The network root certifies your own TLS CA, which is then trusted next to the network's
    (tls/ca.pem): your PKI issues the services' certificates from then on (docs/tls.md)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from offpay.service.datadir import CENTRAL, load_network
    from offpay.service.keystore import load_credential
    from offpay.service.tls_pki import add_trusted_ca, certify_request

    with refusals():
        network = load_network(data)
        try:
            request_pem = request.read_bytes()
        except OSError as exc:
            raise UsageError(f"--request {request} cannot be read: {exc.strerror}") from None
        root = load_credential(network.folder / CENTRAL, "root")
        certificate = certify_request(root, request_pem, dt.datetime.now(dt.UTC))
        try:
            out.write_bytes(certificate.public_bytes(Encoding.PEM))
        except OSError as exc:
            raise UsageError(f"--out {out} cannot be written: {exc.strerror}") from None
        add_trusted_ca(network.folder, network.root_der, certificate)
    typer.echo(f"certified {certificate.subject.rfc4514_string()}; written to {out}")
