"""A secure device's non-volatile memory as it sits outside the secure core (anti-rollback).

What the device stores is sealed (AES-GCM, with a key generated inside the device that never
leaves it) and bound to the value of a monotonic counter the device keeps in hardware and can
only move forward. An attacker who reads the memory, keeps a copy and writes it back later
(to spend the same balance again) hands the device a record whose counter is behind: the device
refuses to run on it. A record altered or moved from another device does not unseal at all.

Every record is authenticated before it is deserialised, so only this device's own writes are
ever deserialised.

Values are immutable (the devices' states are frozen dataclasses, changed by making a new one),
and a command changes a few small fields and appends to a log. So a write seals only what
changed (:class:`SealedMemory`'s layout):

* the **head**, sealed anew on every write under the new counter: the counter, the state's
  class, every field that is not a tuple (small values as they are; larger ones as their own
  pickle, reused while the field is the same object), and for every tuple field (a log, the
  payments received, the certificate chain) the ids of the segments holding its elements, as
  one byte string of 16 bytes an id (kept per field and extended as it grows: a terminal with
  hundreds of payments received does not pickle hundreds of ids on every write);
* **segments**, one per element of a tuple field, each sealed once, when the element was first
  stored, under its own id (the counter of that write, the field and the element's place) as
  associated data. An appended element is one new segment; an element a sync removes takes
  its segment with it, so no segment ever holds what the state no longer has, and a memory's
  size depends on what it holds, not on the order in which it came to hold it.

The segments follow the head field by field, each field's in the order of its elements (the
order its ids are named in), so the head need not list them again. The head names each
segment by id and each segment is sealed under its id, so a segment from an older write, from
another position or another device fails to unseal, and the whole memory written back from an
older copy has an older counter in its head: both are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from offpay.crypto.sealing import Sealer
from offpay.device.image import MemoryImage
from offpay.errors import DeviceStateError, SealError
from offpay.money import Money

Random = Callable[[int], bytes]
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_LENGTH = struct.Struct(">I")
# How the head keeps a field: the value itself, its own pickle, or the ids of its segments.
_AS_IS, _PICKLED, _SEGMENTS = 0, 1, 2
_LITERAL = frozenset({int, bool, str, type(None), Money})  # small: pickled with the head
_SMALL_BYTES = 64
_ID_BYTES = 16  # a segment id: write counter, field position, element place (128 bits)
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


@dataclasses.dataclass(frozen=True)
class _Stored:
    """How one tuple field was last stored: the tuple, the ids of its segments, those ids as
    the head keeps them (16 bytes each) and the segments as the blob holds them, in order."""

    value: tuple[Any, ...]
    ids: tuple[int, ...]
    packed: bytes
    framed: bytes


class SealedMemory:
    def __init__(self, owner: str, random: Random = os.urandom) -> None:
        self._sealer = Sealer.generate(random(32))
        self._random = random
        self._aad = f"offpay-memory\x00{owner}".encode()
        self._counter = 0  # the hardware monotonic counter: not in the memory, never goes back
        self.blob: bytes | None = None  # what an attacker can read, copy and write back
        self._cache: tuple[bytes, Any] | None = None
        # What the last write stored, reused while a field is the same object (RAM only):
        self._fields: dict[str, tuple[Any, bytes]] = {}  # a plain field: (value, pickle)
        self._tuples: dict[str, _Stored] = {}  # a tuple field
        self._segments: dict[int, bytes] = {}  # segment id -> its framed, sealed bytes
        self._last: tuple[Any] | None = None  # the record last written, and its head's layout
        self._layout: list[Any] = []
        self._kinds = bytearray()

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

    # -- reading ------------------------------------------------------------------------------

    def read(self) -> Any:
        blob = self.blob
        if blob is None:
            return None
        if self._cache is not None and self._cache[0] is blob:
            return self._cache[1]
        try:
            pieces = _split(blob)
            head = self._sealer.unseal(pieces[0], self._aad)
        except SealError:
            return self._read_earlier_layout(blob)
        counter, kind, kinds, layout, ids = pickle.loads(head)
        if counter != self._counter:
            raise DeviceStateError(
                "stored state is older than the device's monotonic counter: it was rolled back",
                code="device.rolled_back",
            )
        if ids is None:  # the segments follow the head field by field, as its layout names them
            ids = [] if kind is None else _segment_ids(kinds, layout)
        if len(ids) != len(pieces) - 1:
            raise SealError("sealed memory does not hold the segments its head names")
        segments = {
            sid: pickle.loads(self._sealer.unseal(piece, self._segment_aad(sid)))
            for sid, piece in zip(ids, pieces[1:], strict=True)
        }
        value = layout if kind is None else _restore(kind, kinds, layout, segments)
        self._cache = (blob, value)
        return value

    def _read_earlier_layout(self, blob: bytes) -> Any:
        """A memory a device wrote before the head-and-segments layout: the whole state sealed
        at once (a device's first write after reading it stores it in the current layout).
        Anything else was altered or belongs elsewhere."""
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

    # -- writing ------------------------------------------------------------------------------

    def write(self, value: Any) -> None:
        self._counter += 1
        names = _record_fields(value)
        stored: Any
        if names:
            kind: bytes | None = _class_pickle(type(value))
            now = vars(value)
            last, layout, kinds = self._last, self._layout, self._kinds
            if last is None or type(last[0]) is not type(value):  # the first of this class
                last, layout, kinds = None, [None] * len(names), bytearray(len(names))
                self._fields.clear()
                self._tuples.clear()
                self._segments.clear()
            # Only the fields that are not the same objects as in the last write are stored
            # again: a payment changes four of a card's nineteen.
            old = vars(last[0]) if last is not None else {}
            tuples = self._tuples
            for i, name in enumerate(names):
                field = now[name]
                if old.get(name, self) is field:
                    continue
                if type(field) in _LITERAL and name not in tuples:  # most changes: in the head
                    kinds[i], layout[i] = _AS_IS, field
                else:
                    kinds[i], layout[i] = self._store(name, field, i)
            self._last, self._layout, self._kinds = (value,), layout, kinds
            stored_kinds, stored = bytes(kinds), tuple(layout)
            segments = [tuples[names[i]].framed for i, k in enumerate(kinds) if k == _SEGMENTS]
        else:
            kind, stored_kinds, stored = None, b"", value  # a value stored whole
            self._last, self._layout, self._kinds = None, [], bytearray()
            self._fields.clear()
            self._tuples.clear()
            self._segments.clear()
            segments = []
        head = pickle.dumps((self._counter, kind, stored_kinds, stored, None), protocol=_PROTOCOL)
        sealed = self._sealer.seal(head, self._aad, self._random(12))
        blob = b"".join((_LENGTH.pack(len(sealed)), sealed, *segments))
        self.blob = blob
        self._cache = (blob, value)

    def _store(self, name: str, value: Any, position: int) -> tuple[int, Any]:
        """What the head keeps of one field, and how: a small value itself (pickled with the
        head), a larger one's own pickle (reused while the field is the same object), or the
        ids of a tuple field's segments (each new element sealed into a segment of its own)."""
        kind = type(value)
        if kind is not tuple or not value:
            self._drop(name)
            if kind in _LITERAL or (kind is bytes and len(value) <= _SMALL_BYTES):
                return _AS_IS, value
            known = self._fields.get(name)
            if known is None or known[0] is not value:
                known = (value, pickle.dumps(value, protocol=_PROTOCOL))
                self._fields[name] = known
            return _PICKLED, known[1]
        stored = self._tuples.get(name)
        if stored is None or stored.value is not value:
            before = stored.value if stored is not None else ()
            # Equal elements (the same objects, or equal values after a fresh read) pickle the
            # same: an appended tuple keeps its earlier segments.
            if stored and len(value) > len(before) and value[: len(before)] == before:
                new = self._seal_elements(value[len(before) :], position)
                stored = _Stored(
                    value,
                    (*stored.ids, *new),
                    stored.packed + _pack(new),
                    stored.framed + b"".join([self._segments[sid] for sid in new]),
                )
            else:  # elements removed or reordered: those still there keep their segments
                pairs = zip(before, stored.ids, strict=True) if stored else ()
                old = {id(e): (e, sid) for e, sid in pairs}
                ids = tuple(self._kept(old, e, position, k) for k, e in enumerate(value))
                for sid in set(stored.ids if stored else ()) - set(ids):
                    del self._segments[sid]
                framed = b"".join([self._segments[sid] for sid in ids])
                stored = _Stored(value, ids, _pack(ids), framed)
            self._tuples[name] = stored
        return _SEGMENTS, stored.packed

    def _kept(self, old: dict[int, tuple[Any, int]], element: Any, position: int, k: int) -> int:
        """The segment of ``element`` if it is one of the tuple's old elements, else a new one."""
        known = old.get(id(element))
        if known is not None and known[0] is element:
            return known[1]
        return self._seal_elements((element,), position, k)[0]

    def _seal_elements(self, new: tuple[Any, ...], position: int, first: int = 0) -> list[int]:
        """Seal each element in a segment of its own, under an id no other segment ever had:
        this write's counter, the field's position and the element's place among the new ones.
        One segment per element keeps a memory's size a function of what it holds, not of the
        order in which it came to hold it."""
        ids = []
        for k, element in enumerate(new, first):
            sid = (self._counter << 64) | (position << 32) | k  # 128 bits, as the AAD holds
            plain = pickle.dumps(element, protocol=_PROTOCOL)
            sealed = self._sealer.seal(plain, self._segment_aad(sid), self._random(12))
            self._segments[sid] = _LENGTH.pack(len(sealed)) + sealed
            ids.append(sid)
        return ids

    def _drop(self, name: str) -> None:
        """Forget a tuple field's segments: it is no longer a tuple (or is empty)."""
        stored = self._tuples.pop(name, None)
        if stored is not None:
            for sid in stored.ids:
                del self._segments[sid]

    def _segment_aad(self, sid: int) -> bytes:
        return self._aad + b"\x00segment\x00" + sid.to_bytes(16, "big")


def _pack(ids: Any) -> bytes:
    """Segment ids as the head keeps them: 16 bytes each, big-endian."""
    return b"".join([sid.to_bytes(_ID_BYTES, "big") for sid in ids])


def _segment_ids(kinds: bytes, layout: tuple[Any, ...]) -> list[int]:
    """Every segment id the head names, field by field: the order of the segments in the blob."""
    return [
        sid for k, part in zip(kinds, layout, strict=True) if k == _SEGMENTS for sid in _ids(part)
    ]


def _ids(part: Any) -> list[int]:
    """The segment ids of a tuple field in the head: packed (16 bytes each), or a tuple of
    integers as heads written before the ids were packed hold them."""
    if not isinstance(part, bytes):
        return list(part)
    if len(part) % _ID_BYTES:
        raise SealError("sealed memory names a segment id of the wrong length")
    return [int.from_bytes(part[i : i + _ID_BYTES], "big") for i in range(0, len(part), 16)]


def _split(blob: bytes) -> list[bytes]:
    """The sealed pieces of a blob: the head, then the segments, each after its length."""
    pieces, at = [], 0
    view = memoryview(blob)
    while at < len(blob):
        if at + _LENGTH.size > len(blob):
            raise SealError("sealed memory is cut short")
        (size,) = _LENGTH.unpack_from(blob, at)
        at += _LENGTH.size
        if size > len(blob) - at:
            raise SealError("sealed memory is cut short")
        pieces.append(bytes(view[at : at + size]))
        at += size
    if not pieces:
        raise SealError("sealed memory is empty")
    return pieces


def _restore(
    cls_pickle: bytes, kinds: bytes, layout: tuple[Any, ...], segments: dict[int, Any]
) -> Any:
    """A dataclass from the head: per field, the value itself, its pickle or the ids of the
    segments holding its elements, in the order of the fields."""
    cls = pickle.loads(cls_pickle)
    values = []
    for kind, part in zip(kinds, layout, strict=True):
        if kind == _SEGMENTS:
            try:
                values.append(tuple([segments[sid] for sid in _ids(part)]))
            except KeyError:
                raise SealError("sealed memory lacks a segment its head names") from None
        else:
            values.append(pickle.loads(part) if kind == _PICKLED else part)
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**dict(zip(names, values, strict=True)))


@functools.cache
def _class_pickle(cls: type) -> bytes:
    """A state's class as the head stores it, pickled once (a class reference costs pickle an
    import look-up each time)."""
    return pickle.dumps(cls, protocol=_PROTOCOL)


@dataclasses.dataclass(frozen=True)
class _Fields:
    """A state as the earlier layout stored it (its class and each field's pickle, a tuple's
    element by element); kept under this name so that such a memory still reads."""

    cls: type
    parts: tuple[bytes | tuple[bytes, ...], ...]

    def restore(self) -> Any:
        names = [f.name for f in dataclasses.fields(self.cls)]
        values = [
            tuple(pickle.loads(e) for e in part) if isinstance(part, tuple) else pickle.loads(part)
            for part in self.parts
        ]
        return self.cls(**dict(zip(names, values, strict=True)))


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
