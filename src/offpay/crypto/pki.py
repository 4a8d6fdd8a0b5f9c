"""The public-key infrastructure: a central-bank root, one intermediate CA per intermediary.

Who may say what is decided by the certificate, never by a field in a message: a card trusts a
balance instruction only if the signer's certificate has the role ``engine`` and was issued by
the card's own intermediary; a terminal's payment request only if the certificate has the role
``terminal``. Devices carry no clock, so device-side checks ignore validity periods; services
check them against the time the edge gives them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from offpay.crypto.keys import Algorithm, PublicKey, Signer
from offpay.errors import CertificateError, EncodingError

CENTRAL_BANK = "central-bank"
CHAINS_KEPT = 8192  # verified certificate chains a trust store remembers (first in, first out)


class Role(enum.StrEnum):
    ROOT = "root"  # the central bank's certificate authority
    CA = "ca"  # an intermediary's certificate authority
    ENGINE = "engine"  # an intermediary's engine: instructions to devices, interbank requests
    NOTARY = "notary"  # the central bank's notary and ledger service
    MINT = "mint"  # the central bank's token minting service (token scheme)
    CARD = "card"
    TERMINAL = "terminal"
    ELEMENT = "element"  # a token wallet's secure element: its key endorses ownership keys


DEVICE_ROLES = frozenset({Role.CARD, Role.TERMINAL, Role.ELEMENT})
PAYEE_ROLES = frozenset({Role.TERMINAL, Role.CARD})  # who may ask for an offline payment
CENTRAL_ROLES = frozenset({Role.CA, Role.NOTARY, Role.MINT})  # certified by the root itself


@dataclass(frozen=True)
class Identity:
    """Who a verified certificate names: its id, role and the institution behind it."""

    id: str
    role: Role
    institution: str
    public_key: PublicKey = field(compare=False, repr=False)
    fingerprint: bytes = field(repr=False)


def _name(common: str, role: Role, institution: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, institution),
        ]
    )


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise CertificateError("certificate subject lacks a required attribute")
    value = values[0].value
    return value if isinstance(value, str) else value.decode()


def identity_of(cert: x509.Certificate) -> Identity:
    role_text = _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    try:
        role = Role(role_text)
    except ValueError:
        raise CertificateError(f"certificate has unknown role {role_text!r}") from None
    return Identity(
        id=_attr(cert.subject, NameOID.COMMON_NAME),
        role=role,
        institution=_attr(cert.subject, NameOID.ORGANIZATION_NAME),
        public_key=cert.public_key(),  # type: ignore[arg-type]
        fingerprint=fingerprint(cert),
    )


def fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(_DER)).digest()


_DER = Encoding.DER


def load_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, TypeError) as exc:
        raise EncodingError("certificate is not valid DER") from exc


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(_DER)


@dataclass(frozen=True)
class Credential:
    """A signer together with the certificate chain that vouches for it (leaf first)."""

    signer: Signer
    chain: tuple[bytes, ...]

    @property
    def identity(self) -> Identity:
        return identity_of(load_certificate(self.chain[0]))


@dataclass(frozen=True)
class Authority:
    """A certificate authority: the central bank's root or an intermediary's CA."""

    credential: Credential

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.credential.chain[0])

    @property
    def name(self) -> str:
        return self.credential.identity.institution

    @classmethod
    def root(
        cls, now: dt.datetime, algorithm: Algorithm = Algorithm.ED25519, years: int = 20
    ) -> Authority:
        signer = Signer.generate(algorithm)
        name = _name(f"{CENTRAL_BANK} root", Role.ROOT, CENTRAL_BANK)
        cert = (
            _builder(name, name, signer.public_key, now, years)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .sign(signer.key, _hash_for(signer))
        )
        return cls(Credential(signer, (cert_der(cert),)))

    def issue(
        self,
        subject_id: str,
        role: Role,
        public_key: PublicKey,
        now: dt.datetime,
        *,
        institution: str | None = None,
        years: int = 5,
    ) -> tuple[bytes, ...]:
        """Certify ``public_key`` for ``role``; returns the subject's chain, leaf first."""
        is_ca = role is Role.CA
        if is_ca and self.credential.identity.role is not Role.ROOT:
            raise CertificateError("only the root may certify an intermediary's CA")
        inst = institution if institution is not None else self.name
        cert = (
            _builder(
                _name(subject_id, role, inst), self.certificate.subject, public_key, now, years
            )
            .add_extension(
                x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
            )
            .sign(self.credential.signer.key, _hash_for(self.credential.signer))
        )
        tail = self.credential.chain if self.credential.identity.role is not Role.ROOT else ()
        return (cert_der(cert), *tail)

    def intermediary(
        self, name: str, now: dt.datetime, algorithm: Algorithm = Algorithm.ED25519
    ) -> Authority:
        """A CA for intermediary ``name``, certified by this root."""
        signer = Signer.generate(algorithm)
        chain = self.issue(f"{name} ca", Role.CA, signer.public_key, now, institution=name)
        return Authority(Credential(signer, chain))

    def credential_for(
        self, subject_id: str, role: Role, now: dt.datetime, algorithm: Algorithm
    ) -> Credential:
        """A fresh key pair and its certificate, for roles whose key lives with the authority."""
        signer = Signer.generate(algorithm)
        return Credential(signer, self.issue(subject_id, role, signer.public_key, now))


def _hash_for(signer: Signer) -> hashes.SHA256 | None:
    """ECDSA needs a hash named; Ed25519 and ML-DSA hash internally and take None."""
    return hashes.SHA256() if signer.algorithm is Algorithm.ECDSA_P256 else None


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: PublicKey,
    now: dt.datetime,
    years: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * years))
    )


@dataclass
class TrustStore:
    """Verifies certificate chains up to one root, caching what it has already verified.

    Held inside every device and role. ``revoked`` lists identities that must be refused even
    though their chain verifies (delivered by the revocation list at sync).
    """

    root_der: bytes
    revoked: set[str] = field(default_factory=set)
    _verified: dict[tuple[bytes, ...], tuple[Identity, dt.datetime, dt.datetime]] = field(
        default_factory=dict, repr=False
    )

    @property
    def root(self) -> x509.Certificate:
        return load_certificate(self.root_der)

    def verify_chain(
        self,
        chain: tuple[bytes, ...],
        now: dt.datetime | None = None,
        *,
        check_revoked: bool = True,
    ) -> Identity:
        """The identity the chain's leaf certifies, if the chain leads to our root.

        ``now`` is checked against validity periods when given (services); devices pass None.
        ``check_revoked=False`` is for history made before a revocation (token ancestors).
        """
        if not chain or len(chain) > 2:
            raise CertificateError("certificate chain must hold one or two certificates")
        cached = self._verified.get(chain)
        if cached is None:
            cached = self._verify_uncached(chain)
            if len(self._verified) >= CHAINS_KEPT:
                # Bounded: an intermediary meets new devices without end, and a chain kept
                # per device grew a settling process by about 2 KiB per device for ever.
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    self._verified.pop(next(iter(self._verified)))
            self._verified[chain] = cached
        ident, not_before, not_after = cached
        if now is not None and not (not_before <= now <= not_after):
            raise CertificateError(
                "certificate is outside its validity period", code="crypto.expired"
            )
        if check_revoked and ident.id in self.revoked:
            raise CertificateError(f"{ident.id} is revoked", code="crypto.revoked")
        return ident

    def _verify_uncached(
        self, chain: tuple[bytes, ...]
    ) -> tuple[Identity, dt.datetime, dt.datetime]:
        """Signatures and roles along the chain, and the window in which all of it is valid."""
        certs = [load_certificate(der) for der in chain]
        issuer = self.root
        for cert in reversed(certs):
            try:
                cert.verify_directly_issued_by(issuer)
            except Exception as exc:  # cryptography raises several types here
                raise CertificateError("certificate is not issued by a trusted authority") from exc
            issuer = cert
        window = [self.root, *certs]
        not_before = max(c.not_valid_before_utc for c in window)
        not_after = min(c.not_valid_after_utc for c in window)
        leaf = identity_of(certs[0])
        if len(certs) == 2:
            ca = identity_of(certs[1])
            if ca.role is not Role.CA:
                raise CertificateError("the middle certificate is not an intermediary CA")
            if leaf.institution != ca.institution:
                raise CertificateError("certificate names another institution than its issuer")
            if leaf.role is Role.ROOT or leaf.role in CENTRAL_ROLES:
                raise CertificateError(f"an intermediary cannot certify role {leaf.role}")
        elif leaf.role not in CENTRAL_ROLES:
            raise CertificateError(f"role {leaf.role} must be certified by an intermediary")
        return leaf, not_before, not_after

    def expect(
        self,
        chain: tuple[bytes, ...],
        role: Role,
        *,
        institution: str | None = None,
        now: dt.datetime | None = None,
        check_revoked: bool = True,
    ) -> Identity:
        """Verify ``chain`` and insist on the role (and institution) the context requires."""
        ident = self.verify_chain(chain, now, check_revoked=check_revoked)
        if ident.role is not role:
            raise CertificateError(f"expected a {role} certificate, got {ident.role} ({ident.id})")
        if institution is not None and ident.institution != institution:
            raise CertificateError(
                f"expected a certificate of {institution}, got one of {ident.institution}"
            )
        return ident
