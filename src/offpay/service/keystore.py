"""Keeping a party's credential on disk between runs: the private key as PKCS #8 PEM (readable
by the owner only) and its certificate chain as PEM certificates, leaf first.

A served central bank must restart with the same root and minting keys, and an intermediary
with the same CA key, or nothing it signed before would verify.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from offpay.crypto.keys import Signer, algorithm_of
from offpay.crypto.pki import Credential, cert_der, load_certificate
from offpay.errors import OffpayError


class KeystoreError(OffpayError):
    """A key or certificate file that is missing or unreadable."""

    code = "service.keystore"


def save_credential(folder: Path, name: str, credential: Credential) -> None:
    """Write ``name.key`` (mode 0600) and ``name.chain.pem`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = credential.signer.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path = folder / f"{name}.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    pem = b"".join(
        load_certificate(der).public_bytes(serialization.Encoding.PEM) for der in credential.chain
    )
    (folder / f"{name}.chain.pem").write_bytes(pem)


def load_credential(folder: Path, name: str) -> Credential:
    try:
        key = serialization.load_pem_private_key((folder / f"{name}.key").read_bytes(), None)
        certs = x509.load_pem_x509_certificates((folder / f"{name}.chain.pem").read_bytes())
        algorithm_of(key)
    except (OSError, ValueError, OffpayError) as exc:
        raise KeystoreError(f"cannot read the {name} key or chain in {folder}: {exc}") from None
    return Credential(Signer(key), tuple(cert_der(c) for c in certs))  # type: ignore[arg-type]
