"""Signature algorithms, chosen by the key rather than by the caller.

A verifier never asks "which algorithm?": it takes the public key out of the signer's
certificate and the key's type decides. Adding an algorithm (another post-quantum scheme, say)
means one more row in :data:`ALGORITHMS`, nothing else.

Keys are `cryptography` objects everywhere (certificates, sealed memory, key files). Ed25519
signatures are made and checked by libsodium through PyNaCl: the same algorithm (RFC 8032),
about twice as fast as this OpenSSL build at verifying, which is what settling a backlog and
walking a token's history spend their time on (BENCHMARKS.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from nacl.bindings import crypto_sign, crypto_sign_open
from nacl.exceptions import BadSignatureError

from offpay.errors import OffpayError, SignatureError


class Algorithm(enum.StrEnum):
    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    ML_DSA_65 = "ml-dsa-65"


DEFAULT_ALGORITHM = Algorithm.ED25519

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | mldsa.MLDSA65PrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey


class _Scheme(Protocol):
    def generate(self) -> PrivateKey: ...
    def sign(self, key: PrivateKey, data: bytes) -> bytes: ...
    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None: ...
    def owns(self, key: object) -> bool: ...


@dataclass(frozen=True)
class _Ed25519:
    def generate(self) -> PrivateKey:
        return ed25519.Ed25519PrivateKey.generate()

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        # libsodium's secret key is the 32-byte seed followed by the public key
        secret = key.private_bytes_raw() + key.public_key().public_bytes_raw()
        return crypto_sign(data, secret)[:64]

    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None:
        assert isinstance(key, ed25519.Ed25519PublicKey)
        if len(signature) != 64:
            raise InvalidSignature
        try:
            crypto_sign_open(signature + data, key.public_bytes_raw())
        except BadSignatureError as exc:
            raise InvalidSignature from exc

    def owns(self, key: object) -> bool:
        return isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey)


@dataclass(frozen=True)
class _EcdsaP256:
    def generate(self) -> PrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))

    def owns(self, key: object) -> bool:
        return (
            isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
            and key.curve.name == "secp256r1"
        )


@dataclass(frozen=True)
class _MlDsa65:
    def generate(self) -> PrivateKey:
        return mldsa.MLDSA65PrivateKey.generate()

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        assert isinstance(key, mldsa.MLDSA65PrivateKey)
        return key.sign(data)

    def verify(self, key: PublicKey, signature: bytes, data: bytes) -> None:
        assert isinstance(key, mldsa.MLDSA65PublicKey)
        key.verify(signature, data)

    def owns(self, key: object) -> bool:
        return isinstance(key, mldsa.MLDSA65PrivateKey | mldsa.MLDSA65PublicKey)


ALGORITHMS: dict[Algorithm, _Scheme] = {
    Algorithm.ED25519: _Ed25519(),
    Algorithm.ECDSA_P256: _EcdsaP256(),
    Algorithm.ML_DSA_65: _MlDsa65(),
}


def algorithm_of(key: object) -> Algorithm:
    """The algorithm a private or public key belongs to; unsupported keys are refused."""
    for alg, scheme in ALGORITHMS.items():
        if scheme.owns(key):
            return alg
    raise SignatureError(f"unsupported key type {type(key).__name__}")


def parse_algorithm(name: str) -> Algorithm:
    try:
        return Algorithm(name)
    except ValueError:
        known = ", ".join(a.value for a in Algorithm)
        raise OffpayError(
            f"unknown signature algorithm {name!r}; choose one of {known}",
            code="crypto.unknown_algorithm",
        ) from None


@dataclass(frozen=True)
class Signer:
    """A private key that can sign; the only holder of key material in a role or device."""

    key: PrivateKey

    @classmethod
    def generate(cls, algorithm: Algorithm = DEFAULT_ALGORITHM) -> Signer:
        return cls(ALGORITHMS[algorithm].generate())

    @property
    def algorithm(self) -> Algorithm:
        return algorithm_of(self.key)

    @property
    def public_key(self) -> PublicKey:
        return self.key.public_key()  # type: ignore[return-value]

    def sign(self, data: bytes) -> bytes:
        return ALGORITHMS[self.algorithm].sign(self.key, data)


def verify_signature(key: PublicKey, signature: bytes, data: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` over ``data`` verifies under ``key``."""
    try:
        ALGORITHMS[algorithm_of(key)].verify(key, signature, data)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise SignatureError("signature does not verify") from exc


def public_key_bytes(key: PublicKey) -> bytes:
    """A stable byte form of a public key (DER SubjectPublicKeyInfo), for hashing and storage."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
