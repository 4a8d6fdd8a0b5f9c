"""Both parties of a payment synchronising at once through their two intermediaries: the
requests that settle the payment reach the engines at the same instant, on their own threads.

The engines must use databases that are safe for concurrent use (file-backed SQLite or a
server): an in-memory SQLite database is one connection shared by every thread, so two
transactions interleave on it (docs/threats.md, "Limits of the set-up")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, funded

ROUNDS = 20
RENDEZVOUS_TIMEOUT_S = 60  # a guard against a hang, not a measurement


class Rendezvous:
    """A network tap that holds the next message to each armed (party, kind) until all of them
    arrived, then lets them through together: the requests reach their handlers at the same
    instant, each on its own thread."""

    def __init__(self, *points: tuple[str, str]) -> None:
        self._points = frozenset(points)
        self._armed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(len(points))

    def arm(self) -> None:
        with self._lock:
            self._armed = set(self._points)

    def __call__(self, to: str, kind: str, data: bytes) -> bytes:
        with self._lock:
            hit = (to, kind) in self._armed
            self._armed.discard((to, kind))
        if hit:
            self._barrier.wait(timeout=RENDEZVOUS_TIMEOUT_S)
        return data


def run_together(*calls: Callable[[], Any]) -> list[BaseException]:
    """Run each call on its own thread; the exceptions they raised."""
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            call()
        except BaseException as exc:  # reported to the caller, which decides
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def both_parties_syncing_concurrently(play: Play, *, rounds: int = ROUNDS) -> None:
    """Alice (bank-a) pays Bob (bank-b) SEK 1 offline; then, on two threads, her card
    synchronises at bank-a while his synchronises at bank-b, and bank-b's debit request
    reaches bank-a at the same instant as her session. ``rounds`` times. Each payment must be
    debited, notarised and credited exactly once (the primary keys at each step), with money
    conserved after every round."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", rounds * SEK)
    bob = net.add_user("Bob", "bank-b")
    notarised = net.central.notarised_count()
    together = Rendezvous(("bank-a", "card-session"), ("bank-a", "debit-request"))
    play.tried(
        f"{rounds} times: Alice pays Bob SEK 1 offline, then both synchronise on two threads, "
        "her session and bank-b's debit request for her payment reaching bank-a together"
    )
    net.network.taps.append(together)
    try:
        for done in range(1, rounds + 1):
            checked.p2p(alice, bob, 1 * SEK)
            together.arm()
            errors = checked.step(
                run_together,
                lambda: alice.phone.sync(alice.pin),
                lambda: bob.phone.sync(bob.pin),
            )
            expect(errors == [], f"round {done}: a concurrent sync failed: {errors}")
            expect(
                net.central.notarised_count() == notarised + done,
                f"round {done}: the notary recorded "
                f"{net.central.notarised_count() - notarised} payments, not {done}",
            )
            left = net.money((rounds - done) * SEK)
            expect(
                alice.shadow == alice.card_balance == left,
                f"round {done}: Alice was debited other than once per payment",
            )
            expect(
                bob.shadow == net.money(done * SEK),
                f"round {done}: Bob was credited other than once per payment",
            )
            expect(
                all(bank.in_transit() == net.money(0) for bank in net.banks.values()),
                f"round {done}: a payment was left in transit",
            )
            # Bob's card may have been answered before the credit from Alice's sync reached
            # his shadow wallet (the two syncs ran at once): his next sync brings it.
            checked.sync(bob)
            expect(bob.card_balance == bob.shadow, f"round {done}: Bob's card lost money")
    finally:
        net.network.taps.remove(together)
