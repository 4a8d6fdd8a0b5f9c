"""A secure device switched off: what it keeps inside its hardware, and its sealed memory.

A card or terminal module lives longer than one process (``offpay`` commands run one at a
time on the same devices). What the hardware keeps across a power cut is its private key, the
key its memory is sealed with, the monotonic counter and the root it was personalised to
trust; its state stays sealed (AES-GCM) exactly as :class:`~offpay.device.memory.SealedMemory`
wrote it. An image restores the same device, with its anti-rollback check intact.
"""

from __future__ import annotations

from dataclasses import dataclass

from offpay.crypto.keys import Signer


@dataclass(frozen=True)
class MemoryImage:
    """The sealed memory as the device leaves it: key and counter (inside the hardware) and
    the sealed record (outside it, readable and copyable by anyone)."""

    key: bytes
    counter: int
    blob: bytes | None


@dataclass(frozen=True)
class DeviceImage:
    signer: Signer
    memory: MemoryImage
    root: bytes | None  # the root the device trusts, None while it is blank
    record_key: bytes | None = None  # a terminal module's key for the records it seals
