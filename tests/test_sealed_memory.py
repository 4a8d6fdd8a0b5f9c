"""Sealed memory stores a device state field by field, reusing the bytes of fields (and of a
tuple's elements) that did not change: what it reads back must still be exactly the last
state written, and only that one."""

from __future__ import annotations

import dataclasses

import pytest

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
