"""Sealed storage: what a secure module keeps outside itself, encrypted and authenticated.

The key never leaves the module. The associated data binds each sealed record to its owner and
position, so a record cannot be moved to another device or slot without detection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from offpay.errors import SealError

NONCE_BYTES = 12


@dataclass(frozen=True)
class Sealer:
    key: bytes
    # The cipher with its expanded key, made once: a device seals its state on every command.
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_aead", AESGCM(self.key))

    @classmethod
    def generate(cls, random: bytes | None = None) -> Sealer:
        return cls(random if random is not None else AESGCM.generate_key(bit_length=256))

    def seal(self, plaintext: bytes, associated: bytes, nonce: bytes | None = None) -> bytes:
        n = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        return n + self._aead.encrypt(n, plaintext, associated)

    def unseal(self, sealed: bytes, associated: bytes) -> bytes:
        if len(sealed) <= NONCE_BYTES:
            raise SealError("sealed record is too short")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
        except InvalidTag:
            raise SealError("sealed record was altered or belongs elsewhere") from None
