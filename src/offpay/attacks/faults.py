"""The hostile network's generic attack: every message of every flow of the catalogue
(:data:`offpay.sim.flows.FLOWS`) cut before or after its receiver acts, duplicated, or
reordered, one fault per play, then retried as users and operators would
(:func:`offpay.sim.flows.play`). Either the retry completes the flow or everything is as it
was; no money is lost or created, no honest device is blocked, and a late or duplicated
delivery is refused or answered without harm, never a crash.

The cases are generated from the flows' recorded message lists, so a flow added to the
catalogue is attacked with no code here. Each case runs in a forked copy of the flow's
prepared network (:mod:`offpay.sim.forked`), on a network of its own: conservation is checked
after every step there, and counted into the play's checks."""

from __future__ import annotations

from collections import Counter, defaultdict

from offpay.attacks.checked import DefenceFailed
from offpay.attacks.play import Play
from offpay.attacks.report import FindingKind
from offpay.sim.flows import FLOWS, Flow, Played, Prepared, play, prepare
from offpay.sim.forked import CAN_FORK, CopyFailed, in_a_copy
from offpay.transport.faults import Fault, Hop


def describe(p: Played) -> str:
    """What a case did, for a failure message: the step that failed and the balances that
    are neither what the flow declares nor what they were before."""
    rows = [f"{p.flow}, {p.fault} at hop {p.hop}: step {p.failed} failed with {p.error}"]
    rows += [
        f"  {k}: before {p.before.get(k)}, after {p.after.get(k)}, expected {p.expected.get(k)}"
        for k in p.expected
        if p.after.get(k) != p.expected.get(k) or p.after.get(k) != p.before.get(k)
    ]
    return "\n".join(rows)


def play_case(prepared: Prepared, hop: Hop, fault: Fault) -> Played:
    """One case on a copy of the prepared network (a freshly prepared one where this
    platform cannot fork)."""
    if CAN_FORK:
        try:
            return in_a_copy(lambda: play(prepared.flow, hop, fault, prepared.world))
        except CopyFailed as exc:
            raise DefenceFailed(f"{prepared.flow.name}, {fault} at hop {hop}: {exc}") from exc
    return play(prepared.flow, hop, fault, prepare(prepared.flow).world)


def held(played: Played, hop: Hop) -> None:
    """The case's defences held: the fault hit the hop it was aimed at, no late delivery
    crashed, no honest device was blocked, and the flow completed or left everything as
    it was."""
    if played.hop is None or played.hop.label != hop.label:
        raise DefenceFailed(f"the flow's message list changed: hop {hop.index} is {played.hop}")
    if played.late_errors:
        raise DefenceFailed(f"a replayed or held message crashed: {played.late_errors}")
    if played.blocked:
        raise DefenceFailed(f"honest devices blocked: {played.blocked}")
    if not (played.completed or played.returned):
        raise DefenceFailed(f"neither completed nor returned:\n{describe(played)}")


def faults_on_flow(play_: Play, flow: Flow) -> None:
    """Every fault at every hop of ``flow``'s message list."""
    prepared = prepare(flow)
    cases = [(hop, fault) for hop in prepared.hops for fault in hop.faults]
    play_.tried(
        f"{flow.name}: each of {len(cases)} faults at its {len(prepared.hops)} messages "
        f"({', '.join(f.value for f in Fault)}), then the retries"
    )
    ends: Counter[str] = Counter()
    refusals: dict[tuple[str, str], list[str]] = defaultdict(list)
    for hop, fault in cases:
        played = play_case(prepared, hop, fault)
        play_.checked.counted(played.steps)
        held(played, hop)
        ends["completed" if played.completed else "as before"] += 1
        for receiver, code, label in played.late_refusals:
            refusals[(receiver, code)].append(f"{fault} of {label}")
    play_.tried(
        f"{flow.name}: {ends['completed']} completed by the retries, "
        f"{ends['as before']} left every balance as before"
    )
    for (receiver, code), late in sorted(refusals.items()):
        play_.finding(
            FindingKind.REFUSED,
            receiver,
            code,
            f"{flow.name}: {len(late)} late or duplicated deliveries, e.g. {late[0]}",
        )


def transport_faults(play_: Play, *, flows: tuple[Flow, ...] | None = None) -> None:
    """Every fault at every message of every flow of the catalogue (or of ``flows``)."""
    for flow in FLOWS if flows is None else flows:
        faults_on_flow(play_, flow)
