"""Sealed memory stores a device state field by field, reusing the bytes of fields (and of a
tuple's elements) that did not change: what it reads back must still be exactly the last
state written, and only that one."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offpay.device.memory import SealedMemory, evolve
from offpay.errors import DeviceStateError, SealError
from offpay.money import Money


@dataclasses.dataclass(frozen=True)
class State:
    balance: Money
    log: tuple[tuple[int, Money], ...]
    challenge: bytes | None
    tags: frozenset[str] = frozenset()


def _fresh_read(memory: SealedMemory) -> object:
    """Read as after a power cycle: from the blob, not from the last object written."""
    memory._cache = None
    return memory.read()


def test_every_write_reads_back_from_the_blob_alone() -> None:
    memory = SealedMemory("device-1")
    state = State(Money(100), (), None)
    for i in range(1, 8):
        state = dataclasses.replace(
            state,
            balance=state.balance + Money(i),
            log=(*state.log, (i, Money(i))) if i % 3 else state.log[1:],
            challenge=bytes([i]) * 4 if i % 2 else state.challenge,
            tags=state.tags | {f"t{i}"} if i == 5 else state.tags,
        )
        memory.write(state)
        assert _fresh_read(memory) == state


def test_an_older_blob_is_refused_even_when_its_fields_are_cached() -> None:
    memory = SealedMemory("device-1")
    old = State(Money(100), ((1, Money(1)),), b"c")
    memory.write(old)
    copy = memory.blob
    memory.write(dataclasses.replace(old, balance=Money(0)))
    memory.blob = copy
    with pytest.raises(DeviceStateError) as exc:
        memory.read()
    assert exc.value.code == "device.rolled_back"


def test_a_blob_of_another_device_does_not_unseal() -> None:
    a, b = SealedMemory("device-a"), SealedMemory("device-b")
    a.write(State(Money(1), (), None))
    b.write(State(Money(2), (), None))
    a.blob = b.blob
    with pytest.raises(SealError):
        a.read()


def test_values_that_are_not_records_are_stored_whole() -> None:
    memory = SealedMemory("device-1")
    for value in ({"a": 1}, (1, 2), Money(5), "text", None):
        memory.write(value)
        assert _fresh_read(memory) == value


def test_evolve_is_replace() -> None:
    state = State(Money(100), ((1, Money(1)),), b"c", frozenset({"x"}))
    changed = evolve(state, balance=Money(7), challenge=None)
    assert changed == dataclasses.replace(state, balance=Money(7), challenge=None)
    assert state == State(Money(100), ((1, Money(1)),), b"c", frozenset({"x"}))
    assert type(changed) is State and changed.log is state.log
    with pytest.raises(TypeError):
        evolve(state, no_such_field=1)


# --- the layout: a head sealed on every write, segments sealed once ----------------------------


@dataclasses.dataclass(frozen=True)
class Wallet:
    """A device state in miniature: small fields, a large one and two tuple fields."""

    balance: Money
    seq: int
    log: tuple[bytes, ...]
    pending: tuple[tuple[bytes, Money], ...]
    note: bytes  # large (kept as its own pickle in the head) or small (kept as it is)


_ENTRY = st.binary(min_size=1, max_size=300)
# What a command does to the state: each is applied to the last state written.
_STEPS = st.one_of(
    st.tuples(st.just("pay"), _ENTRY),  # append to the log, money and counter move
    st.tuples(st.just("ask"), st.binary(min_size=16, max_size=16)),  # append to pending
    st.tuples(st.just("sync"), st.integers(0, 8)),  # drop the oldest entries
    st.tuples(st.just("note"), st.binary(max_size=200)),
    st.tuples(st.just("same"), st.none()),  # written again unchanged
    st.tuples(st.just("fresh"), st.none()),  # equal values, new objects (as after a read)
)


def _apply(state: Wallet, step: tuple[str, object]) -> Wallet:
    kind, arg = step
    if kind == "pay":
        assert isinstance(arg, bytes)
        return evolve(
            state, balance=state.balance + Money(len(arg)), seq=state.seq + 1, log=(*state.log, arg)
        )
    if kind == "ask":
        assert isinstance(arg, bytes)
        return evolve(state, pending=(*state.pending, (arg, Money(5))))
    if kind == "sync":
        assert isinstance(arg, int)
        return evolve(state, seq=state.seq + 1, log=state.log[arg:], pending=())
    if kind == "note":
        assert isinstance(arg, bytes)
        return evolve(state, note=arg)
    if kind == "fresh":
        return Wallet(
            Money(state.balance.minor),
            state.seq,
            tuple(bytes(e) for e in state.log),
            tuple((bytes(r), Money(m.minor)) for r, m in state.pending),
            bytes(state.note),
        )
    return state


def _restored(memory: SealedMemory) -> SealedMemory:
    """The same memory after a power cut: nothing in RAM, only the key, counter and blob."""
    return SealedMemory.restore("device-1", memory.image())


@given(st.lists(_STEPS, max_size=25))
def test_any_history_reads_back_exactly_after_a_power_cut(steps: list[tuple[str, object]]) -> None:
    """After every write, what a fresh unseal reads is exactly the state written, and a
    memory restored mid-way carries on writing (its first write stores everything anew)."""
    memory = SealedMemory("device-1")
    state = Wallet(Money(0), 0, (), (), b"")
    memory.write(state)
    for i, step in enumerate(steps):
        state = _apply(state, step)
        memory.write(state)
        assert _restored(memory).read() == state
        if i % 7 == 3:  # a power cut: the device carries on from its sealed memory alone
            memory = _restored(memory)
            assert memory.read() == state


@given(st.lists(_STEPS, min_size=1, max_size=12), st.data())
def test_a_changed_byte_anywhere_is_refused(
    steps: list[tuple[str, object]], data: st.DataObject
) -> None:
    """Any altered byte of the blob, in the head, a segment or a length, is refused: the
    memory never reads back anything but the last state written."""
    memory = SealedMemory("device-1")
    state = Wallet(Money(0), 0, (), (), b"")
    for step in steps:
        state = _apply(state, step)
        memory.write(state)
    assert memory.blob is not None
    at = data.draw(st.integers(0, len(memory.blob) - 1))
    changed = bytearray(memory.blob)
    changed[at] ^= data.draw(st.integers(1, 255))
    memory.blob = bytes(changed)
    with pytest.raises((SealError, DeviceStateError)):
        _fresh_read(memory)


@given(st.lists(_STEPS, min_size=2, max_size=12), st.data())
def test_an_older_segment_or_head_is_refused(
    steps: list[tuple[str, object]], data: st.DataObject
) -> None:
    """Rolling back one record: the blob of the last write with its head, or one of its
    segments, taken from an older write is refused (an older head by the counter, a segment by
    the id it was sealed under)."""
    memory = SealedMemory("device-1")
    state = Wallet(Money(0), 0, (), (), b"")
    blobs = []
    for step in steps:
        state = _apply(state, step)
        memory.write(state)
        blobs.append(memory.blob)
    old = blobs[data.draw(st.integers(0, len(blobs) - 2))]
    assert old is not None and memory.blob is not None
    now_pieces, old_pieces = _pieces(memory.blob), _pieces(old)
    which = data.draw(st.integers(0, len(now_pieces) - 1))
    donor = old_pieces[data.draw(st.integers(0, len(old_pieces) - 1))]
    if donor == now_pieces[which]:
        return  # the same sealed bytes (a segment still in use): nothing rolled back
    now_pieces[which] = donor
    memory.blob = b"".join(len(p).to_bytes(4, "big") + p for p in now_pieces)
    with pytest.raises((SealError, DeviceStateError)):
        _fresh_read(memory)


def _pieces(blob: bytes) -> list[bytes]:
    """The blob's sealed records (head first), each stored after its 4-byte length."""
    pieces, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "big")
        pieces.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return pieces


def test_a_write_seals_only_what_changed() -> None:
    """Appending to a log leaves every earlier segment's sealed bytes as they were, and a
    sync that drops entries keeps no sealed copy of them (the others keep theirs)."""
    memory = SealedMemory("device-1")
    state = Wallet(Money(0), 0, (b"a" * 200,), (), b"n" * 100)
    memory.write(state)
    assert memory.blob is not None
    first = _pieces(memory.blob)
    state = evolve(state, seq=1, log=(*state.log, b"b" * 200))
    memory.write(state)
    second = _pieces(memory.blob)
    assert len(second) == len(first) + 1 and second[1:-1] == first[1:]  # the new entry alone
    assert second[0] != first[0]  # the head, under the new counter
    memory.write(evolve(state, seq=2, log=state.log[1:]))
    third = _pieces(memory.blob)
    assert third[1:] == [second[-1]]  # the second entry's segment as it was; the first's gone
    assert _fresh_read(memory) == evolve(state, seq=2, log=state.log[1:])


@given(st.lists(_ENTRY, max_size=10), st.integers(0, 10))
def test_a_memorys_size_depends_on_what_it_holds_not_on_its_history(
    entries: list[bytes], dropped: int
) -> None:
    """The population model composes a card's storage from the sizes of what it holds: a log
    built one payment at a time, then cut by a sync, takes the bytes (up to a few for the
    counter and segment ids in the head) of the same log written at once."""
    stepwise, at_once = SealedMemory("device-1"), SealedMemory("device-1")
    state = Wallet(Money(0), 0, (), (), b"")
    for entry in entries:
        state = evolve(state, log=(*state.log, entry))
        stepwise.write(state)
    state = evolve(state, log=state.log[dropped:])
    stepwise.write(state)
    at_once.write(Wallet(Money(0), 0, tuple(bytes(e) for e in state.log), (), b""))
    assert stepwise.blob is not None and at_once.blob is not None
    assert abs(len(stepwise.blob) - len(at_once.blob)) <= 4 * (len(state.log) + 1)
