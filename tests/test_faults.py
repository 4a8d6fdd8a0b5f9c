"""Fault injection (issue 3, point 7): for every flow of the catalogue
(:data:`offpay.sim.flows.FLOWS`), every hop of its recorded message list and every fault that
applies to that hop, play the flow with the fault, then retry as users and operators would.
Money must be conserved after every step, and either the flow's declared end state is reached
or every balance is as it was before the flow; no honest device may end up blocked.

The cases are generated from the message lists, so a flow added to the catalogue is covered
with no code here. Each flow's network is prepared once per process; each case runs in a
forked copy of it, so cases neither pay for the set-up nor disturb each other.

Known bugs are listed in :data:`KNOWN_BUGS` as strict expected failures: each names the
cases it breaks and what goes wrong; a case that starts passing, or fails for another reason,
fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from offpay.attacks.faults import describe, held, play_case
from offpay.errors import OffpayError
from offpay.sim.flows import FLOWS, Played, Prepared, play, prepare, settle
from offpay.sim.forked import CAN_FORK, in_a_copy
from offpay.transport.faults import Fault, Hop, Injector
from offpay.transport.memory import MemoryNetwork

PREPARED: dict[str, Prepared] = {flow.name: prepare(flow) for flow in FLOWS}


# -- known bugs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bug:
    name: str
    reason: str
    symptom: str  # appears in the failure message; any other failure is not this bug
    cases: tuple[tuple[str, str, Fault], ...]  # (flow, str(hop), fault)


C, A, D, R = Fault.CUT_BEFORE, Fault.CUT_AFTER, Fault.DUPLICATE, Fault.REORDER

# Bugs this suite found, kept as strict expected failures until fixed: each entry names the
# generated cases it breaks and the symptom that identifies it. None are open.
KNOWN_BUGS: tuple[Bug, ...] = ()

BUG_OF: dict[tuple[str, str, Fault], Bug] = {case: bug for bug in KNOWN_BUGS for case in bug.cases}


def cases() -> list[Any]:
    out = []
    for name, prepared in PREPARED.items():
        for hop in prepared.hops:
            for fault in hop.faults:
                bug = BUG_OF.get((name, str(hop), fault))
                marks = (
                    [pytest.mark.xfail(strict=True, raises=AssertionError, reason=bug.name)]
                    if bug
                    else []
                )
                label = f"{name}:{hop.index:02d}:{hop.label.replace(' ', '-')}:{fault}"
                out.append(pytest.param(name, hop, fault, marks=marks, id=label))
    return out


# -- running a case in a copy of the prepared process -----------------------------------------


def run(name: str, fn: Callable[[Prepared], Any]) -> Any:
    if CAN_FORK:
        return in_a_copy(lambda: fn(PREPARED[name]))
    return fn(prepare(PREPARED[name].flow))  # no fork: prepare a fresh network each time


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("flow", "hop", "fault"), cases())
def test_a_fault_at_any_hop_completes_or_returns(flow: str, hop: Hop, fault: Fault):
    """The case as `offpay attack transport-faults` plays it (``offpay.attacks.faults``):
    the fault hit the hop, no late delivery crashed, no honest device was blocked, and the
    flow completed or left everything as it was."""
    bug = BUG_OF.get((flow, str(hop), fault))
    try:
        played: Played = play_case(PREPARED[flow], hop, fault)
        held(played, hop)
    except AssertionError as exc:
        if bug is not None and bug.symptom not in str(exc):
            raise RuntimeError(f"fails, but not as known bug {bug.name}: {exc}") from exc
        raise


@pytest.mark.parametrize("flow", list(PREPARED))
def test_the_clean_flow_reaches_its_declared_end_state(flow: str):
    def clean(p: Prepared) -> tuple[Played, dict[str, tuple[int, ...]]]:
        played = play(p.flow, world=p.world)
        settle(p.world, p.flow)
        return played, p.world.balances()

    played, synced = run(flow, clean)
    assert played.completed and not played.synced, describe(played)
    assert synced == PREPARED[flow].flow.expected(synced=True)
    assert len(PREPARED[flow].hops) > 0


def test_every_known_bug_names_generated_cases():
    generated = {(n, str(h), f) for n, p in PREPARED.items() for h in p.hops for f in h.faults}
    assert set(BUG_OF) <= generated, set(BUG_OF) - generated


# -- the injector on its own --------------------------------------------------------------------


def injected(fault: Fault | None) -> tuple[MemoryNetwork, Injector, list[str]]:
    """A network of one receiver that logs what it handles, with ``fault`` on the first
    message."""
    log: list[str] = []

    def bank(kind: str, data: bytes) -> bytes:
        log.append(data.decode())
        return data

    network = MemoryNetwork()
    network.register("bank", bank)
    injector = Injector()
    network.hooks.append(injector.network)
    injector.start()
    network.send("bank", "ping", b"recorded")
    log.clear()
    injector.start(injector.hops[0], fault)
    return network, injector, log


@pytest.mark.parametrize(
    ("fault", "delivered", "answered"),
    [
        (Fault.CUT_BEFORE, ["b"], False),
        (Fault.CUT_AFTER, ["a", "b"], False),
        (Fault.DUPLICATE, ["a", "a", "b"], True),
        (Fault.REORDER, ["b", "a"], False),
    ],
)
def test_each_fault_does_what_it_says(fault: Fault, delivered: list[str], answered: bool):
    network, injector, log = injected(fault)
    try:
        assert network.send("bank", "ping", b"a") == b"a"
        got = True
    except OffpayError as exc:
        assert exc.code == "network.cut"
        got = False
    network.send("bank", "ping", b"b")
    assert got is answered
    assert log == delivered
    assert not injector.holding


def test_a_late_delivery_its_receiver_refuses_is_recorded_with_its_code():
    """What `offpay attack transport-faults` reports: a duplicated message the receiver
    refuses (here: it takes each message once) is kept with the receiver, code and hop."""
    seen: set[bytes] = set()

    def bank(kind: str, data: bytes) -> bytes:
        if data in seen:
            raise OffpayError("seen before", code="wire.replay")
        seen.add(data)
        return data

    network = MemoryNetwork()
    network.register("bank", bank)
    injector = Injector()
    network.hooks.append(injector.network)
    injector.start()
    network.send("bank", "ping", b"recorded")
    injector.start(injector.hops[0], Fault.DUPLICATE)
    assert network.send("bank", "ping", b"a") == b"a"
    assert injector.late_refusals == [("bank", "wire.replay", "bank ping")]
    injector.start()
    assert injector.late_refusals == []
