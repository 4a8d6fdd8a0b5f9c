"""Attacks on the sign-once token scheme (FEDS 2025-105, "Threat Modeling"): a broken secure
element that spends a token twice, and one that does not sign once."""

from __future__ import annotations

from typing import Any

from offpay.attacks.checked import DefenceFailed, expect
from offpay.attacks.play import Play
from offpay.attacks.report import FindingKind, LossRecord
from offpay.attacks.tools import SEK
from offpay.crypto.keys import Signer
from offpay.errors import DoubleSpend, OffpayError
from offpay.money import Money
from offpay.sim.network import TokenUser
from offpay.tokens.model import Token, TokenBody, child_id, transition_digest
from offpay.tokens.tamper import break_element, repair_element
from offpay.tokens.transfer import (
    Offer,
    ReceiverSession,
    SenderSession,
    Transfer,
    transfer_offline,
)
from offpay.wire.envelope import sign


def pay(sender: TokenUser, receiver: TokenUser, minor: int) -> Token:
    """An offline token transfer between two phones with a perfect relay."""
    return transfer_offline(sender.element, receiver.element, Money(minor, sender.bank.currency))


def discovered(sender: TokenUser, receiver: TokenUser, amount: Money) -> tuple[Any, Any]:
    """Phase 1 of the protocol between two phones, done: both sessions ready for phase 2."""
    s, r = SenderSession(sender.element, amount), ReceiverSession(receiver.element, amount)
    s_proof, r_proof = s.on_hello(r.hello()), r.on_hello(s.hello())
    s.on_proof(r_proof)
    r.on_proof(s_proof)
    expect(s.code == r.code != "", "the two phones show different codes")
    s.users_agree(r.code)
    r.users_agree(s.code)
    return s, r


def offer(sender: TokenUser, receiver: TokenUser, token: Token) -> ReceiverSession:
    """Phase 2 as a sender's broken element plays it: any token, offered and signed. A
    refused offer leaves the receiver's session without an address and without the token."""
    s, r = discovered(sender, receiver, token.value)
    msg = Offer(sender.element_id, receiver.element_id, s.session, token)
    try:
        r.on_offer(sign(msg, sender.element.credential).to_bytes())
    except OffpayError:
        expect(r.address is None and r.offered is None, "a refused offer left state behind")
        raise
    return r


def _double_spend(play: Play, code: str, party: str, attempt: str, fn: Any, *args: Any) -> None:
    """``fn`` must be refused as a double spend naming the broken element (checked here)."""
    error = play.refused_any(code, party, attempt, fn, *args)
    expect(isinstance(error, DoubleSpend), f"{error} does not name the double spend")


def token_double_spend(play: Play) -> None:
    """Mal's broken element pays the same minted SEK 100 token to Ben and to Cat, offline. Both
    histories verify offline; the central bank's mint refuses the second deposit, names the
    element that signed twice and revokes it; the second receiver holds a token worth nothing,
    a loss bounded by what the element held when it went offline."""
    net, checked = play.net, play.checked
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-b")
    root = checked.step(mal.app.withdraw, net.money(100 * SEK))
    held = mal.tokens
    play.tried("Mal breaks his element's SignOnce and pays the same SEK 100 token to Ben and Cat")
    break_element(mal.element)
    to_ben = checked.step(pay, mal, ben, 100 * SEK)
    to_cat = checked.step(pay, mal, cat, 100 * SEK)
    expect(to_ben.ancestors == to_cat.ancestors == (root,), "the branches differ in history")
    play.tried("Ben deposits first, then Cat")
    checked.step(ben.app.deposit, net.money(100 * SEK))
    expect(net.central.mint.revoked_elements() == [], "an honest deposit revoked somebody")
    error = play.refused_any(
        "token.double_spend",
        "central-bank (mint)",
        "Cat's deposit of the second branch",
        cat.app.deposit,
        net.money(100 * SEK),
    )
    if not isinstance(error, DoubleSpend) or error.element != mal.element_id:
        raise DefenceFailed(f"the double spend was not attributed to {mal.element_id}: {error}")
    expect(net.central.mint.revoked_elements() == [mal.element_id], "the element is not revoked")
    play.finding(
        FindingKind.BLOCKED,
        "central-bank (mint)",
        "token.revoked",
        f"{mal.element_id} revoked network-wide",
    )
    play.loss(
        LossRecord(
            "bank-b (borne by Cat)",
            mal.element_id,
            to_cat.value,
            held,
            "the second branch of a double spend is worth nothing at deposit",
        )
    )


def token_double_spend_in_one_history(play: Play) -> None:
    """Mal's broken element pays the same token to Ben twice. Ben's honest element will not
    merge the two branches; a broken one that merges them makes a token no verifier accepts:
    not Ben's own element, not Cat's, not the mint's."""
    net, checked = play.net, play.checked
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-b")
    checked.step(mal.app.withdraw, net.money(100 * SEK))
    play.tried("Mal's broken element pays the same SEK 100 token to Ben twice")
    break_element(mal.element)
    first = checked.step(pay, mal, ben, 100 * SEK)
    second = checked.step(pay, mal, ben, 100 * SEK)
    _double_spend(
        play,
        "token.double_spend",
        "Ben's element",
        "merging both branches",
        ben.element.merge,
        [first.id, second.id],
    )
    play.tried("Ben breaks his element too, merges both branches and offers the result")
    break_element(ben.element)
    merged = checked.step(ben.element.merge, [first.id, second.id])
    repair_element(ben.element)
    _double_spend(
        play,
        "token.double_spend",
        "Ben's element",
        "verifying the merged token",
        ben.element.verify,
        merged,
    )
    s, r = discovered(ben, cat, net.money(200 * SEK))
    _double_spend(
        play,
        "token.double_spend",
        "Cat's element",
        "the merged token offered",
        r.on_offer,
        s.offer(),
    )
    expect(cat.tokens == net.money(0), "Cat took the merged token")
    _double_spend(
        play,
        "token.double_spend",
        "central-bank (mint)",
        "the merged token",
        net.central.mint.verifier.verify,
        merged,
    )


def token_not_signed_once(play: Play) -> None:
    """Phase 3 with a transfer whose proof is not the owner key's signature (the sender kept
    the key and signed with another): Ben's element refuses it; the genuine transfer goes
    through afterwards."""
    net, checked = play.net, play.checked
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(mal.app.withdraw, net.money(100 * SEK))
    s, r = discovered(mal, ben, net.money(100 * SEK))
    address = r.on_offer(s.offer())
    expect(r.address is not None and r.offered is not None, "Ben gave no address")
    play.tried("Mal's phone sends a transfer proved by a key other than the token's owner key")
    body = TokenBody(
        child_id([r.offered.id], r.address.owner, r.offered.value),
        r.offered.value,
        r.address.owner,
        r.address.endorsement,
    )
    digest = transition_digest([r.offered.id], [body])
    forged = Token(
        body.id,
        body.value,
        body.owner,
        body.endorsement,
        (Signer.generate().sign(digest),),
        (r.offered,),
        (),
    )
    msg = Transfer(mal.element_id, ben.element_id, s.session, forged)
    play.refused(
        "token.bad_proof",
        "Ben's element",
        "a transfer not signed by the owner key",
        r.on_transfer,
        sign(msg, mal.element.credential).to_bytes(),
    )
    expect(ben.tokens == net.money(0) and r.received is None, "Ben took the forged transfer")
    try:
        checked.step(r.on_transfer, s.on_address(address))
    except OffpayError as exc:
        raise DefenceFailed(f"the genuine transfer was refused after the forgery: {exc}") from exc
