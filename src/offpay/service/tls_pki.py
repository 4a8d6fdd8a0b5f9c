"""The network's TLS certificates: an X.509 TLS CA certified by the network root, a server and
client certificate per party, and the certificate revocation list (CRL) the services load.

Why an intermediate and not the root itself: the root signs the network's money (minting
chains, intermediaries' CAs) and belongs offline, in an HSM; TLS certificates are short-lived
and renewed often, so they are signed by a CA of their own that the root certifies once. The
TLS CA's key is ECDSA P-256 whatever the network's signature algorithm, because every TLS
stack speaks it (an ML-DSA root still certifies it). Clients trust the TLS CA's certificate
only after checking that the network root signed it (:func:`trusted_tls_cas`).

Files (all under the network's data folder)::

    tls/ca.pem                   the TLS CA certificate(s) clients trust; more than one while
                                 a CA is being rotated; each must be certified by the root
    tls/crl.pem                  the TLS CA's revocation list: revoked parties' certificates
    central-bank/tls-ca.key      the TLS CA's private key (0600)
    central-bank/tls-issued.json every certificate serial the TLS CA issued, and to whom
    NAME/tls.key, NAME/tls.pem   a party's key (0600) and its certificate, then the TLS CA's
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from offpay.crypto.pki import Credential, load_certificate
from offpay.errors import OffpayError

TLS_FOLDER = "tls"
CA_FILE = "ca.pem"
CRL_FILE = "crl.pem"
CA_KEY = "tls-ca.key"
ISSUED_LOG = "tls-issued.json"
PARTY_KEY = "tls.key"
PARTY_CHAIN = "tls.pem"
CA_YEARS = 10
PARTY_DAYS = 397  # what public web PKI allows a server certificate; renew before
CRL_DAYS = 30


class TlsSetupError(OffpayError):
    """TLS files that are missing, unreadable or not certified by this network's root."""

    code = "tls.setup"


def tls_folder(network_folder: Path) -> Path:
    return network_folder / TLS_FOLDER


def party_files(network_folder: Path, name: str) -> tuple[Path, Path]:
    """``name``'s TLS key and certificate chain."""
    return network_folder / name / PARTY_KEY, network_folder / name / PARTY_CHAIN


@dataclass(frozen=True)
class TlsAuthority:
    """The network's TLS CA: its key and its certificate (certified by the network root)."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, root: Credential, now: dt.datetime, years: int = CA_YEARS) -> TlsAuthority:
        """A new TLS CA, its certificate signed by the network root's key."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                # A name of its own per CA: while one CA replaces another both are trusted,
                # and a revocation list is matched to its CA by name.
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"offpay network TLS CA {secrets.token_hex(4)}"
                ),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "tls-ca"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "central-bank"),
            ]
        )
        return cls(key, certify_ca(root, subject, key.public_key(), now, years))

    def issue(
        self,
        name: str,
        hosts: Iterable[str],
        now: dt.datetime,
        *,
        days: int = PARTY_DAYS,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new key and certificate for party ``name``, good as a server (for ``hosts``:
        names or IP addresses) and as a client of the other services (mutual TLS)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "tls"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            ]
        )
        cert = (
            _builder(
                subject, self.certificate.subject, key.public_key(), now, dt.timedelta(days=days)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return key, cert

    def revocation_list(
        self, serials: Iterable[int], now: dt.datetime, days: int = CRL_DAYS
    ) -> x509.CertificateRevocationList:
        """The CRL naming ``serials``; services refuse those certificates at the handshake."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for serial in sorted(set(serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=5))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())


def certify_ca(
    root: Credential,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: dt.datetime,
    years: int = CA_YEARS,
) -> x509.Certificate:
    """The network root certifies a TLS CA's key: its own, or an operator's CA held in their
    PKI or HSM. Path length 0: the CA certifies services only, no further CA."""
    root_cert = load_certificate(root.chain[0])
    return (
        _builder(subject, root_cert.subject, public_key, now, dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        .sign(root.signer.key, _root_hash(root))
    )


def certify_request(root: Credential, request_pem: bytes, now: dt.datetime) -> x509.Certificate:
    """A CA certificate for an operator's certificate signing request (PEM), after checking
    the request's own signature: the operator's CA then issues the services' certificates."""
    try:
        request = x509.load_pem_x509_csr(request_pem)
    except ValueError as exc:
        raise TlsSetupError(f"not a PEM certificate signing request: {exc}") from None
    if not request.is_signature_valid:
        raise TlsSetupError("the certificate signing request's signature does not verify")
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TlsSetupError("a TLS CA key must be ECDSA or RSA, which every TLS stack speaks")
    return certify_ca(root, request.subject, public_key, now)


def add_trusted_ca(folder: Path, root_der: bytes, certificate: x509.Certificate) -> None:
    """Add a CA the root certified to ``tls/ca.pem``: clients and services trust it from
    their next connection on, next to the CAs already there."""
    path = tls_folder(folder) / CA_FILE
    try:
        certificate.verify_directly_issued_by(load_certificate(root_der))
    except Exception:  # cryptography raises several types here
        raise TlsSetupError("the network root did not sign that certificate") from None
    _replace(path, path.read_bytes() + _pem(certificate))


def host_of(url: str) -> str:
    return urlsplit(url).hostname or "127.0.0.1"


def issue_network_tls(
    folder: Path, root: Credential, urls: Mapping[str, str], central: str, now: dt.datetime
) -> None:
    """What ``offpay network init`` does for TLS: the TLS CA, a certificate per party for the
    host of its URL, and an empty revocation list."""
    authority = TlsAuthority.create(root, now)
    tls = tls_folder(folder)
    tls.mkdir(parents=True, exist_ok=True)
    write_private(folder / central / CA_KEY, _key_pem(authority.key))
    (tls / CA_FILE).write_bytes(_pem(authority.certificate))
    for name, url in urls.items():
        issue_party(folder, central, authority, name, [host_of(url)], now)
    write_crl(folder, central, authority, set(), now)


def issue_party(
    folder: Path,
    central: str,
    authority: TlsAuthority,
    name: str,
    hosts: Iterable[str],
    now: dt.datetime,
    *,
    days: int = PARTY_DAYS,
) -> x509.Certificate:
    """Issue ``name`` a TLS key and certificate and write them; logged by serial so that a
    revocation of ``name`` names every certificate it ever held."""
    key, cert = authority.issue(name, hosts, now, days=days)
    key_path, chain_path = party_files(folder, name)
    # Each file replaced in one step; between the two a service sees a key that does not fit
    # the certificate, refuses that pair and keeps serving the last good one.
    write_private(key_path, _key_pem(key))
    _replace(chain_path, _pem(cert) + _pem(authority.certificate))
    log = issued(folder, central)
    log[format(cert.serial_number, "x")] = name
    (folder / central / ISSUED_LOG).write_text(json.dumps(log, indent=2) + "\n")
    return cert


def issued(folder: Path, central: str) -> dict[str, str]:
    """Serial (hex) -> party name of every TLS certificate the network's TLS CA issued."""
    path = folder / central / ISSUED_LOG
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}


def load_authority(folder: Path, central: str) -> TlsAuthority:
    """The TLS CA whose key is in the central bank's folder: the newest certificate in
    ``tls/ca.pem`` for that key."""
    try:
        key = serialization.load_pem_private_key((folder / central / CA_KEY).read_bytes(), None)
        certs = x509.load_pem_x509_certificates((tls_folder(folder) / CA_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsSetupError(f"cannot read the network's TLS CA: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsSetupError("the network's TLS CA key is not an ECDSA key")
    mine = [c for c in certs if c.public_key() == key.public_key()]
    if not mine:
        raise TlsSetupError("no certificate in tls/ca.pem is for the TLS CA key")
    return TlsAuthority(key, max(mine, key=lambda c: c.not_valid_before_utc))


def write_crl(
    folder: Path,
    central: str,
    authority: TlsAuthority,
    revoked_parties: set[str],
    now: dt.datetime,
) -> None:
    """Write ``tls/crl.pem``: every certificate ever issued to a party in ``revoked_parties``.
    The lists of other CAs still trusted (during a CA rotation) are kept: a service checks
    every leaf against its own CA's list. Written to a new file then renamed, so a service
    never reads half a list."""
    log = issued(folder, central)
    serials = [int(serial, 16) for serial, party in log.items() if party in revoked_parties]
    crl = authority.revocation_list(serials, now)
    path = tls_folder(folder) / CRL_FILE
    trusted = {c.subject for c in _cas(folder)}
    others = [
        old
        for old in read_crls(path)
        if old.issuer != authority.certificate.subject and old.issuer in trusted
    ]
    part = path.with_suffix(".part")
    part.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (*others, crl)))
    os.replace(part, path)


_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----\s*", re.DOTALL)


def read_crls(path: Path) -> list[x509.CertificateRevocationList]:
    """Every CRL in ``path`` (none if there is no file)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        return [x509.load_pem_x509_crl(block) for block in _CRL_BLOCK.findall(data)]
    except ValueError as exc:
        raise TlsSetupError(f"{path} cannot be read: {exc}") from None


def revoked_serials(folder: Path) -> set[int]:
    """Every serial the CRLs in ``tls/crl.pem`` name."""
    return {s.serial_number for crl in read_crls(tls_folder(folder) / CRL_FILE) for s in crl}


def renew(
    folder: Path,
    central: str,
    urls: Mapping[str, str],
    names: Iterable[str],
    now: dt.datetime,
    *,
    new_ca_by: Credential | None = None,
    retire_old_cas: bool = False,
) -> TlsAuthority:
    """Issue ``names`` new TLS certificates, from a new TLS CA certified by ``new_ca_by``
    (the network root) if given, else from the current one. A new CA is added to
    ``tls/ca.pem`` next to the old (both trusted) unless ``retire_old_cas``, which keeps only
    the current one. The parties revoked so far stay revoked under the new CA."""
    tls = tls_folder(folder)
    if new_ca_by is not None:
        log = issued(folder, central)
        revoked = {log.get(format(serial, "x")) for serial in revoked_serials(folder)}
        authority = TlsAuthority.create(new_ca_by, now)
        cas = tls / CA_FILE
        _replace(cas, cas.read_bytes() + _pem(authority.certificate))  # trusted before used
        write_private(folder / central / CA_KEY, _key_pem(authority.key))
        for name in names:
            issue_party(folder, central, authority, name, [host_of(urls[name])], now)
        write_crl(folder, central, authority, {p for p in revoked if p is not None}, now)
    else:
        authority = load_authority(folder, central)
        for name in names:
            issue_party(folder, central, authority, name, [host_of(urls[name])], now)
    if retire_old_cas:
        _replace(tls / CA_FILE, _pem(authority.certificate))
        keep = [c for c in read_crls(tls / CRL_FILE) if c.issuer == authority.certificate.subject]
        _replace(tls / CRL_FILE, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in keep))
    return authority


def _cas(folder: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates((tls_folder(folder) / CA_FILE).read_bytes())
    except (OSError, ValueError):
        return []


def _replace(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, replacing the file in one step."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(part, path)


def trusted_tls_cas(folder: Path, root_der: bytes) -> bytes:
    """``tls/ca.pem`` as PEM, after checking that the network root certified every CA in it:
    a client trusts no TLS CA the root did not vouch for."""
    root = load_certificate(root_der)
    path = tls_folder(folder) / CA_FILE
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        raise TlsSetupError(
            f"{path} is missing: this network has no TLS CA (made by an older version?); "
            "create a new network with `offpay network init`"
        ) from None
    except (OSError, ValueError) as exc:
        raise TlsSetupError(f"{path} cannot be read: {exc}") from None
    for cert in certs:
        try:
            cert.verify_directly_issued_by(root)
        except Exception:  # cryptography raises several types here
            raise TlsSetupError(
                f"{path} holds a certificate the network root did not sign "
                f"({cert.subject.rfc4514_string()})"
            ) from None
    return b"".join(_pem(c) for c in certs)


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: dt.datetime,
    lifetime: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
    )


def _root_hash(root: Credential) -> hashes.SHA256 | None:
    """ECDSA needs a hash named; Ed25519 and ML-DSA hash internally and take None."""
    return hashes.SHA256() if isinstance(root.signer.key, ec.EllipticCurvePrivateKey) else None


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
