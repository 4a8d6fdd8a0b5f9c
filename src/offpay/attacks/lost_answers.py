"""An honest card whose online session failed after an answer was lost: the relay loses the
intermediary's signed instruction, and the next session is refused or cut on its way through
settlement. Found by the stateful machine (``tests/test_stateful.py``)."""

from __future__ import annotations

import contextlib
from typing import Any

from offpay.attacks.checked import Checked, expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, funded
from offpay.errors import OffpayError
from offpay.sim.network import User


def failed_session_after_a_lost_instruction(play: Play) -> None:
    """Twice, for two honest cards: a sync whose answer is lost, then a top-up refused for
    lack of funds (Alice), or a sync cut between her intermediary and the notary (Carol).
    The unapplied instruction stays superseded; neither card is blocked, and every later
    session is served."""
    net, checked = play.net, play.checked
    shop = net.add_merchant("Shop", "bank-b")
    for name, then in (("Alice", "a refused top-up"), ("Carol", "a sync cut at the notary")):
        user = funded(checked, name, "bank-a", 100 * SEK)
        checked.charge(shop, user, 10 * SEK)
        play.tried(f"{name}'s sync: bank-a answers, and the relay loses the instruction")
        net.network.cut_next("card-session", after=True)
        expect(cut(checked, user), f"{name}'s sync was not cut")
        if then == "a refused top-up":
            play.tried(f"{name} asks for a SEK 1 000 top-up, more than her online wallet")
            play.refused_any(
                "funds.insufficient", "bank-a", f"{name}'s top-up beyond her wallet",
                user.phone.top_up, user.pin, net.money(1_000 * SEK),
            )  # fmt: skip
        else:
            play.tried(f"{name} synchronises again; the notarise request is cut")
            net.network.cut_next("notarise")
            expect(cut(checked, user), f"{name}'s second sync was not cut")
        with contextlib.suppress(OffpayError):  # a queued retry may still be settling
            checked.sync(user)
        status = play.incidents.status("bank-a", user.card_id)
        expect(status == "active", f"an honest card was left {status}")
        checked.sync(user)
        expect(user.card_balance == user.shadow, f"{name}'s card and shadow wallet differ")
    checked.sync(shop)


def cut(checked: Checked, user: User[Any]) -> bool:
    """``user``'s sync, which the network is about to cut: whether it was."""
    try:
        checked.sync(user)
    except OffpayError as exc:
        return exc.code == "network.cut"
    return False
