"""A secure device's non-volatile memory as it sits outside the secure core (anti-rollback).

What the device stores is sealed (AES-GCM, with a key generated inside the device that never
leaves it) together with the value of a monotonic counter the device keeps in hardware and can
only move forward. An attacker who reads the memory, keeps a copy and writes it back later
(to spend the same balance again) hands the device a record whose counter is behind: the device
refuses to run on it. A record altered or moved from another device does not unseal at all.

The record is authenticated before it is deserialised, so only this device's own writes are
ever deserialised.

Values are immutable (the devices' states are frozen dataclasses, changed by making a new one).
A state is written on every command, and most of its fields (the log, the policy, the
certificate chain) are the same objects as in the last write, so a dataclass is serialised
field by field and a field's bytes are reused while the field is the same object. Every write
still seals the whole state, with the new counter.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

from offpay.crypto.sealing import Sealer
from offpay.device.image import MemoryImage
from offpay.errors import DeviceStateError

Random = Callable[[int], bytes]
_PROTOCOL = pickle.HIGHEST_PROTOCOL
S = TypeVar("S")


def evolve(state: S, **changes: Any) -> S:
    """:func:`dataclasses.replace` for a device state, several times faster: a copy of the
    state's fields with ``changes`` applied, without running ``__init__`` again (the states
    are frozen dataclasses without ``__post_init__``, so it would only copy the fields)."""
    fields = _record_fields(state)
    if not fields or not changes.keys() <= set(fields):
        return dataclasses.replace(state, **changes)  # type: ignore[type-var]
    new = object.__new__(type(state))
    values = vars(new)
    values.update(vars(state))
    values.update(changes)
    return new


class SealedMemory:
    def __init__(self, owner: str, random: Random = os.urandom) -> None:
        self._sealer = Sealer.generate(random(32))
        self._random = random
        self._aad = f"offpay-memory\x00{owner}".encode()
        self._counter = 0  # the hardware monotonic counter: not in the memory, never goes back
        self.blob: bytes | None = None  # what an attacker can read, copy and write back
        self._cache: tuple[bytes, Any] | None = None
        self._fields: dict[str, tuple[Any, bytes | tuple[bytes, ...]]] = {}  # (value, pickle)
        self._elements: dict[str, dict[int, tuple[Any, bytes]]] = {}  # of tuple fields, by id

    def image(self) -> MemoryImage:
        """What the device keeps of this memory when it is switched off."""
        return MemoryImage(self._sealer.key, self._counter, self.blob)

    @classmethod
    def restore(cls, owner: str, image: MemoryImage, random: Random = os.urandom) -> SealedMemory:
        """The memory of a device switched on again; its record is checked at the first read."""
        memory = cls(owner, random)
        memory._sealer = Sealer(image.key)
        memory._counter = image.counter
        memory.blob = image.blob
        return memory

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
        if isinstance(value, _Fields):
            value = value.restore()
        self._cache = (blob, value)
        return value

    def write(self, value: Any) -> None:
        self._counter += 1
        names = _record_fields(value)
        stored = self._by_field(value, names) if names else value
        plain = pickle.dumps((self._counter, stored), protocol=_PROTOCOL)
        blob = self._sealer.seal(plain, self._aad, self._random(12))
        self.blob = blob
        self._cache = (blob, value)

    def _by_field(self, value: Any, names: tuple[str, ...]) -> _Fields:
        parts: list[bytes | tuple[bytes, ...]] = []
        for name in names:
            field_value = getattr(value, name)
            known = self._fields.get(name)
            if known is None or known[0] is not field_value:
                known = (field_value, self._pickle_field(name, field_value))
                self._fields[name] = known
            parts.append(known[1])
        return _Fields(type(value), tuple(parts))

    def _pickle_field(self, name: str, value: Any) -> bytes | tuple[bytes, ...]:
        """A field's pickle; a tuple's (a log, the payments received) element by element, each
        element's reused while it is the same object: a new entry does not re-pickle the rest."""
        if type(value) is not tuple or not value:
            return pickle.dumps(value, protocol=_PROTOCOL)
        before = self._elements.get(name, {})
        now: dict[int, tuple[Any, bytes]] = {}
        out = []
        for element in value:
            known = before.get(id(element))
            if known is None or known[0] is not element:
                known = (element, pickle.dumps(element, protocol=_PROTOCOL))
            now[id(element)] = known
            out.append(known[1])
        self._elements[name] = now
        return tuple(out)


def _record_fields(value: Any) -> tuple[str, ...]:
    """The fields that rebuild ``value`` if it is a dataclass instance without slots whose
    every field is set by __init__, in order; else ()."""
    kind = type(value)
    names = _RECORD_FIELDS.get(kind)
    if names is None:
        record = dataclasses.is_dataclass(kind) and hasattr(value, "__dict__")
        fields = dataclasses.fields(kind) if record else ()
        names = tuple(f.name for f in fields) if all(f.init for f in fields) else ()
        _RECORD_FIELDS[kind] = names
    return names if names and len(vars(value)) == len(names) else ()


_RECORD_FIELDS: dict[type, tuple[str, ...]] = {}


@dataclasses.dataclass(frozen=True)
class _Fields:
    """A dataclass as stored: its class and each field's pickle (a tuple's, element by
    element), in the order of its fields."""

    cls: type
    parts: tuple[bytes | tuple[bytes, ...], ...]

    def restore(self) -> Any:
        names = [f.name for f in dataclasses.fields(self.cls)]
        values = [
            tuple(pickle.loads(e) for e in part) if isinstance(part, tuple) else pickle.loads(part)
            for part in self.parts
        ]
        return self.cls(**dict(zip(names, values, strict=True)))
