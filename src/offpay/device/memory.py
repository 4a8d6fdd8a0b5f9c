"""A secure device's non-volatile memory as it sits outside the secure core (anti-rollback).

What the device stores is sealed (AES-GCM, with a key generated inside the device that never
leaves it) together with the value of a monotonic counter the device keeps in hardware and can
only move forward. An attacker who reads the memory, keeps a copy and writes it back later
(to spend the same balance again) hands the device a record whose counter is behind: the device
refuses to run on it. A record altered or moved from another device does not unseal at all.

The record is authenticated before it is deserialised, so only this device's own writes are
ever deserialised.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

from offpay.crypto.sealing import Sealer
from offpay.errors import DeviceStateError

Random = Callable[[int], bytes]


class SealedMemory:
    def __init__(self, owner: str, random: Random = os.urandom) -> None:
        self._sealer = Sealer.generate(random(32))
        self._random = random
        self._aad = f"offpay-memory\x00{owner}".encode()
        self._counter = 0  # the hardware monotonic counter: not in the memory, never goes back
        self.blob: bytes | None = None  # what an attacker can read, copy and write back
        self._cache: tuple[bytes, Any] | None = None

    def read(self) -> Any:
        blob = self.blob
        if blob is None:
            return None
        if self._cache is not None and self._cache[0] is blob:
            return self._cache[1]
        counter, value = pickle.loads(self._sealer.unseal(blob, self._aad))
        if counter != self._counter:
            raise DeviceStateError(
                "stored state is older than the device's monotonic counter: it was rolled back",
                code="device.rolled_back",
            )
        self._cache = (blob, value)
        return value

    def write(self, value: Any) -> None:
        self._counter += 1
        plain = pickle.dumps((self._counter, value), protocol=pickle.HIGHEST_PROTOCOL)
        blob = self._sealer.seal(plain, self._aad, self._random(12))
        self.blob = blob
        self._cache = (blob, value)
