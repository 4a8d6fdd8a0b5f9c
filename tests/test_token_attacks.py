"""Attacks on the token scheme (FEDS 2025-105, "Threat Modeling"): a double spend by a broken
secure element, caught at deposit (and its element revoked, the revocation reaching other
devices at their next online moment) or offline when both branches meet in one history;
counterfeits refused by the receiver's offline verification and at deposit; and the online
moments of a revoked element, which must not lose money.

Every test asserts the refusal code and that money is conserved (issued == reserves + wallets
+ in transit + tokens outstanding at the central bank's mint).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pytest

from conftest import pay_tokens as pay
from conftest import refused
from offpay.attacks.counterfeits import (
    COUNTERFEITS,
    Forgery,
    another_central_bank,
    make_forgery,
)
from offpay.attacks.registry import play_in_process
from offpay.attacks.report import FindingKind, Outcome
from offpay.attacks.tokens import offer
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.tokens.messages import DepositRequest
from offpay.tokens.model import (
    Endorsement,
    Token,
    TokenBody,
    child_id,
    transition_digest,
)
from offpay.tokens.tamper import break_element as break_user_element
from offpay.tokens.tamper import repair_element as repair_user_element
from offpay.tokens.tamper import store_unverified
from offpay.tokens.transfer import (
    DiscoveryProof,
    ReceiverSession,
    SenderSession,
    six_digits,
)
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, sign

if TYPE_CHECKING:
    from conftest import Checked

SEK = 100  # minor units per krona
ISSUED = 1_000_000_00


def break_element(user: TokenUser) -> None:
    break_user_element(user.element)


def repair_element(user: TokenUser) -> None:
    repair_user_element(user.element)


def discovered(sender: TokenUser, receiver: TokenUser, amount: Money):  # type: ignore[no-untyped-def]
    """Phase 1 of the protocol between two phones, done: both sessions ready for phase 2."""
    s, r = SenderSession(sender.element, amount), ReceiverSession(receiver.element, amount)
    s_proof, r_proof = s.on_hello(r.hello()), r.on_hello(s.hello())
    s.on_proof(r_proof)
    r.on_proof(s_proof)
    assert s.code == r.code != ""
    s.users_agree(r.code)
    r.users_agree(s.code)
    return s, r


@pytest.fixture(scope="module")
def elsewhere() -> OfflineNetwork:
    """Another central bank with its own root, mint and elements: nothing of it is trusted here."""
    return another_central_bank()


# --- double spending (FEDS 2025-105, "Double-spending") ----------------------------------------


@dataclass
class SpentTwice:
    mal: TokenUser
    ben: TokenUser
    cat: TokenUser
    root: Token
    to_ben: Token
    to_cat: Token


@pytest.fixture
def spent_twice(net: OfflineNetwork, checked: Checked) -> SpentTwice:
    """Mal's broken element pays the same minted token to Ben and to Cat, offline."""
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-b")
    root = checked.step(mal.app.withdraw, net.money(100 * SEK))
    break_element(mal)
    to_ben = checked.step(pay, mal, ben, 100 * SEK)
    to_cat = checked.step(pay, mal, cat, 100 * SEK)
    return SpentTwice(mal, ben, cat, root, to_ben, to_cat)


def test_double_spend_is_caught_at_the_second_deposit_and_the_element_revoked(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Played by `offpay attack token-double-spend`: both branches verify offline; the mint
    refuses the second deposit, names the element and revokes it."""
    report = play_in_process("token-double-spend", checked)
    mal, ben, cat = net.token_users["Mal"], net.token_users["Ben"], net.token_users["Cat"]
    assert report.outcome is Outcome.DETECTED
    assert [(f.kind, f.code) for f in report.findings] == [
        (FindingKind.REFUSED, "token.double_spend"),
        (FindingKind.BLOCKED, "token.revoked"),
    ]
    assert ben.online == net.money(100 * SEK)
    assert cat.online == net.money(0)  # nothing credited for the second branch
    assert cat.tokens == net.money(0)
    assert net.central.mint.outstanding() == net.money(0)
    assert net.central.mint.revoked_elements() == [mal.element_id]
    assert mal.online == net.money(400 * SEK)
    (loss,) = report.losses
    assert (loss.device, loss.amount, loss.bound) == (
        mal.element_id,
        net.money(100 * SEK),
        net.money(100 * SEK),
    )


def test_both_branches_verify_offline(
    net: OfflineNetwork, checked: Checked, spent_twice: SpentTwice
) -> None:
    """Offline, neither receiver can know: both accepted, both histories verify."""
    ben, cat, root = spent_twice.ben, spent_twice.cat, spent_twice.root
    assert ben.tokens == cat.tokens == net.money(100 * SEK)
    assert spent_twice.to_ben.ancestors == spent_twice.to_cat.ancestors == (root,)
    assert ben.element.verify(spent_twice.to_ben).length == 1
    assert cat.element.verify(spent_twice.to_cat).length == 1
    assert net.central.mint.outstanding() == net.money(100 * SEK)
    assert net.central.mint.revoked_elements() == []


def test_revocation_reaches_other_devices_at_their_next_online_moment(
    net: OfflineNetwork, checked: Checked, spent_twice: SpentTwice
):
    mal, ben, cat = spent_twice.mal, spent_twice.ben, spent_twice.cat
    dan = net.add_token_user("Dan", "bank-a", online=100 * SEK)
    dan_token = checked.step(dan.app.withdraw, net.money(20 * SEK))
    checked.step(ben.app.deposit, net.money(100 * SEK))
    refused("token.double_spend", checked.step, cat.app.deposit, net.money(100 * SEK))
    assert net.central.mint.revoked_elements() == [mal.element_id]
    repair_element(mal)
    (mal_token,) = mal.element.tokens()  # the broken element still holds the spent token
    amount = net.money(100 * SEK)

    # Before Dan's next online moment his element cannot know: it still talks to Mal.
    assert mal.element_id not in dan.element.trust.revoked
    dan.element.verify(mal_token)
    pending = ReceiverSession(dan.element, amount)
    mal_sender = SenderSession(mal.element, amount)
    pending.on_hello(mal_sender.hello())
    mal_proof = mal_sender.on_hello(pending.hello())

    checked.step(dan.app.withdraw, net.money(10 * SEK))  # an online moment
    assert dan.element.trust.revoked == {mal.element_id}
    assert dan.element.revocation_version == 1

    # Offline, Dan's element now refuses Mal's element in every role.
    refused("token.revoked", pending.on_proof, mal_proof)  # a session begun before
    refused("crypto.revoked", ReceiverSession(dan.element, amount).on_hello, mal_sender.hello())
    mal_receiver = ReceiverSession(mal.element, net.money(20 * SEK))
    refused(
        "crypto.revoked",
        SenderSession(dan.element, net.money(20 * SEK)).on_hello,
        mal_receiver.hello(),
    )
    refused("token.revoked", dan.element.verify, mal_token)
    refused("token.revoked", dan.element.transfer, dan_token.id, mal.element.keygen())
    assert dan.tokens == net.money(30 * SEK)
    # Ben's last online moment came before the revocation: his element does not know yet.
    assert mal.element_id not in ben.element.trust.revoked
    # The mint mints nothing more to the revoked element; the withdrawal is refunded.
    refused("token.revoked", checked.step, mal.app.withdraw, net.money(10 * SEK))
    assert mal.online == net.money(400 * SEK)


def test_double_spend_is_refused_offline_when_both_branches_meet_in_one_history(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Played by `offpay attack token-double-spend-merged`: Ben's honest element will not
    merge the two branches; the merged token a broken element makes is refused by Ben's
    element, by Cat's and by the mint's verifier."""
    report = play_in_process("token-double-spend-merged", checked)
    cat = net.token_users["Cat"]
    assert report.outcome is Outcome.PREVENTED
    assert [(f.party, f.code) for f in report.findings] == [
        ("Ben's element", "token.double_spend"),
        ("Ben's element", "token.double_spend"),
        ("Cat's element", "token.double_spend"),
        ("central-bank (mint)", "token.double_spend"),
    ]
    assert net.central.mint.outstanding() == net.money(100 * SEK)  # one withdrawal, spent twice
    assert cat.tokens == net.money(0) and cat.element.tokens() == []
    assert report.conserved


def test_double_spend_found_in_one_history_at_deposit_revokes_the_element(
    net: OfflineNetwork, checked: Checked
):
    """Both branches merged and deposited: the desk's vault finds the double spend offline;
    the element that signed twice must be revoked as when the central bank finds it."""
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(mal.app.withdraw, net.money(100 * SEK))
    break_element(mal)
    first = checked.step(pay, mal, ben, 100 * SEK)
    second = checked.step(pay, mal, ben, 100 * SEK)
    break_element(ben)  # an honest element refuses this merge; a broken one makes it
    checked.step(ben.element.merge, [first.id, second.id])
    repair_element(ben)

    refused("token.double_spend", checked.step, ben.app.deposit, net.money(200 * SEK))
    assert ben.online == net.money(0)
    assert net.central.mint.outstanding() == net.money(100 * SEK)
    assert net.central.mint.revoked_elements() == [mal.element_id]


def test_a_sender_that_does_not_sign_once_is_refused_at_the_transfer(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Played by `offpay attack token-not-signed-once`: a transfer whose proof is not the
    owner key's signature is refused; the genuine one goes through afterwards."""
    report = play_in_process("token-not-signed-once", checked)
    mal, ben = net.token_users["Mal"], net.token_users["Ben"]
    assert [(f.party, f.code) for f in report.findings] == [("Ben's element", "token.bad_proof")]
    assert ben.tokens == net.money(100 * SEK) and mal.tokens == net.money(0)
    assert report.outcome is Outcome.PREVENTED and report.conserved


# --- counterfeits (FEDS 2025-105, "Counterfeiting") --------------------------------------------


@pytest.fixture
def forgery(net: OfflineNetwork, checked: Checked, elsewhere: OfflineNetwork) -> Forgery:
    return make_forgery(checked, elsewhere)


def test_every_counterfeit_played_by_the_attack(net: OfflineNetwork, checked: Checked) -> None:
    """`offpay attack token-counterfeit`: each counterfeit refused offline (verified and
    offered) and at deposit, where the element that deposited it is blocked and revoked."""
    report = play_in_process("token-counterfeit", checked)
    refused_codes = [f.code for f in report.findings if f.kind is FindingKind.REFUSED]
    assert refused_codes == [code for _, code in COUNTERFEITS.values() for _ in range(3)]
    blocked = [f for f in report.findings if f.kind is FindingKind.BLOCKED]
    assert len(blocked) == len(COUNTERFEITS)
    for number in range(1, len(COUNTERFEITS) + 1):
        mal = net.token_users[f"Mal {number}"]
        assert mal.element_id in net.central.mint.revoked_elements()
        assert net.token_users[f"Cat {number}"].tokens == net.money(0)
    assert report.loss == report.bound == net.money(0) and report.conserved


@pytest.mark.parametrize("case", COUNTERFEITS)
def test_counterfeit_is_refused_offline_by_the_receivers_verification(
    net: OfflineNetwork, checked: Checked, forgery: Forgery, case: str
):
    build, code = COUNTERFEITS[case]
    counterfeit = build(forgery)
    cat = net.add_token_user("Cat", "bank-b")
    outstanding = net.central.mint.outstanding()

    refused(code, checked.step, cat.element.verify, counterfeit)
    refused(code, checked.step, offer, forgery.mal, cat, counterfeit)
    assert cat.element.tokens() == [] and cat.tokens == net.money(0)
    assert net.central.mint.outstanding() == outstanding


@pytest.mark.parametrize("case", COUNTERFEITS)
def test_counterfeit_is_refused_at_deposit(
    net: OfflineNetwork, checked: Checked, forgery: Forgery, case: str
):
    """Mal's element, broken, takes the counterfeit into its store unverified and deposits it:
    the intermediary's vault verifies the history and refuses it; nothing is credited."""
    build, code = COUNTERFEITS[case]
    counterfeit = build(forgery)
    mal = forgery.mal
    store_unverified(mal.element, counterfeit)  # the broken store
    online = mal.online
    outstanding = net.central.mint.outstanding()

    refused(code, checked.step, mal.app.deposit, counterfeit.value)
    assert mal.online == online
    assert net.central.mint.outstanding() == outstanding
    assert mal.bank.tokens.vault.tokens() == []  # type: ignore[union-attr]
    if code != "token.double_spend":
        # Only a broken element signs an invalid token over: the intermediary blocks it.
        assert mal.bank.device(mal.element_id).status == "blocked"
        # Blocked here and revoked network-wide: its certificate is refused before anything.
        refused("crypto.revoked", mal.app.withdraw, net.money(1 * SEK))
        assert mal.element_id in net.central.mint.revoked_elements()


def test_a_token_signed_to_another_elements_vault_key_is_not_credited_to_the_presenter(
    net: OfflineNetwork, checked: Checked
):
    """Ann signs a token over to the vault to deposit it; a relay that copies it and presents
    it in a deposit of its own element's gets nothing, and Ann's deposit still works."""
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    eve = net.add_token_user("Eve", "bank-a")
    token = checked.step(ann.app.withdraw, net.money(40 * SEK))
    signed_over = ann.element.transfer(token.id, ann.app._vault())
    steal = DepositRequest(eve.element_id, eve.app.engine, os.urandom(16), signed_over, None)
    refused("token.invalid", eve.app._send, "token-deposit", steal)
    assert eve.online == net.money(0)
    mine = DepositRequest(ann.element_id, ann.app.engine, os.urandom(16), signed_over, None)
    ann.app._online(ann.app._send("token-deposit", mine))
    assert ann.online == net.money(500 * SEK)
    checked.conserved()


# --- a relay that grinds the 6-digit code (FEDS 2025-105, "Wallet Discovery") -------------------


def test_a_relay_cannot_choose_its_nonces_to_make_the_codes_match(
    net: OfflineNetwork, checked: Checked
):
    """Mal's element sits between Ann and Ben. Knowing both honest nonces, it could pick its
    own two until the code Ann sees equals the one Ben sees (about a thousand tries per side,
    by the birthday bound). Commit-then-reveal stops it: each party reveals its nonce only
    after the peer committed to its own, and a revealed nonce must match the commitment."""
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    mal = net.add_token_user("Mal", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    amount = net.money(100 * SEK)
    ann_s, ben_r = SenderSession(ann.element, amount), ReceiverSession(ben.element, amount)
    mal_r, mal_s = ReceiverSession(mal.element, amount), SenderSession(mal.element, amount)
    # The protocol's order: Mal must send its hellos (commitments) before anyone reveals.
    ann_proof = ann_s.on_hello(mal_r.hello())
    mal_to_ann = mal_r.on_hello(ann_s.hello())
    ben_proof = ben_r.on_hello(mal_s.hello())
    mal_to_ben = mal_s.on_hello(ben_r.hello())
    ann_nonce = decode(Signed.from_bytes(ann_proof).payload, DiscoveryProof).nonce
    ben_nonce = decode(Signed.from_bytes(ben_proof).payload, DiscoveryProof).nonce

    ids_with_ann = sorted([ann.element_id.encode(), mal.element_id.encode()])
    ids_with_ben = sorted([mal.element_id.encode(), ben.element_id.encode()])
    toward_ann: dict[str, bytes] = {}
    toward_ben: dict[str, bytes] = {}
    found: tuple[bytes, bytes] | None = None
    for i in range(1, 200_000):
        nonce = i.to_bytes(16, "big")
        a = six_digits(ann_nonce, nonce, *ids_with_ann)
        b = six_digits(nonce, ben_nonce, *ids_with_ben)
        toward_ann.setdefault(a, nonce)
        toward_ben.setdefault(b, nonce)
        if a in toward_ben:
            found = nonce, toward_ben[a]
            break
        if b in toward_ann:
            found = toward_ann[b], nonce
            break
    assert found is not None  # the grinding itself is cheap...

    def reveal(real_proof: bytes, nonce: bytes) -> bytes:
        """Mal's genuine proof with another nonce in it, signed again by Mal's element."""
        real = decode(Signed.from_bytes(real_proof).payload, DiscoveryProof)
        return sign(replace(real, nonce=nonce), mal.element.credential).to_bytes()

    # ...but a nonce other than the committed one is refused by both honest parties.
    refused("wire.replay", ann_s.on_proof, reveal(mal_to_ann, found[0]))
    refused("wire.replay", ben_r.on_proof, reveal(mal_to_ben, found[1]))
    assert ann.tokens == amount and ben.tokens == net.money(0)


def test_renewal_for_a_revoked_element_does_not_destroy_money(
    net: OfflineNetwork, checked: Checked, spent_twice: SpentTwice
):
    """Mal's element is revoked while it holds a token received honestly; at its next online
    moment it renews that token. The mint refuses to mint to a revoked element, but only after
    the old token was redeemed: the value must still be somewhere (minted anew, credited
    online, or the renewal refused before redemption), never lost."""
    mal, ben, cat = spent_twice.mal, spent_twice.ben, spent_twice.cat
    repair_element(mal)
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    checked.step(ann.app.withdraw, net.money(50 * SEK))
    checked.step(pay, ann, mal, 50 * SEK)
    checked.step(ben.app.deposit, net.money(100 * SEK))
    refused("token.double_spend", checked.step, cat.app.deposit, net.money(100 * SEK))
    assert mal.element_id in net.central.mint.revoked_elements()
    online = mal.online
    mal.app.max_ancestry = 0  # any transferred token counts as long for this element

    try:
        mal.app.renew_long()
    except OffpayError as exc:
        assert exc.code == "token.revoked", str(exc)
    checked.conserved()
    assert mal.online >= online


def test_renewal_to_another_elements_address_is_refused_without_losing_money(
    net: OfflineNetwork, checked: Checked
):
    """A DepositRequest whose ``renew_to`` is not a key of the requesting element must be
    refused before the token is redeemed, or the value must reach the depositor."""
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    token = checked.step(ann.app.withdraw, net.money(50 * SEK))
    signed_over = ann.element.transfer(token.id, ann.app._vault())
    request = DepositRequest(
        ann.element_id, ann.app.engine, os.urandom(16), signed_over, ben.element.keygen()
    )

    def renew_to_ben() -> None:
        ann.app._online(ann.app._send("token-deposit", request))

    refused("token.invalid", checked.step, renew_to_ben)
    assert ben.tokens == net.money(0)


def test_a_forged_ancestor_cannot_get_an_innocent_element_revoked(
    net: OfflineNetwork, checked: Checked
):
    """Mal (an honest element, a malicious app) merges a real token with a fake copy of its
    root that names Vic's element as endorser, then deposits the result. The fake copy is
    verified before anything about it is believed: it is refused as counterfeit, Mal's element
    is blocked, and Vic is not revoked."""
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    vic = net.add_token_user("Vic", "bank-b", online=500 * SEK)
    root = checked.step(mal.app.withdraw, net.money(10 * SEK))
    real = mal.element.transfer(root.id, mal.element.keygen())
    mal.element.store(real)
    fake_key = mal.element.keygen()
    fake_root = Token(
        root.id, root.value, fake_key.owner, Endorsement(vic.element_id, (), b""), (), (), ()
    )
    target = mal.element.keygen()
    value = real.value + fake_root.value
    body = TokenBody(
        child_id([real.id, root.id], target.owner, value), value, target.owner, target.endorsement
    )
    digest = transition_digest([real.id, root.id], [body])
    proofs = (
        mal.element.sign_once(real.owner, digest),
        mal.element.sign_once(fake_key.owner, digest),
    )
    merged = Token(body.id, value, body.owner, body.endorsement, proofs, (real, fake_root), ())
    with pytest.raises(OffpayError) as offline:
        vic.element.verify(merged)
    assert offline.value.code != "token.double_spend"
    mal.element._tokens = {merged.id: merged}  # the malicious app bypasses the store's check
    err = refused_any(checked.step, mal.app.deposit, value)
    assert err.code != "token.double_spend"
    # Only the element that deposited the forgery is blocked and revoked, never Vic's.
    assert net.central.mint.revoked_elements() == [mal.element_id]
    checked.step(vic.app.withdraw, net.money(5 * SEK))  # Vic is still served
    assert mal.bank.device(mal.element_id).status == "blocked"


def refused_any(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(OffpayError) as exc:
        fn(*args)
    return exc.value


@pytest.mark.parametrize("case", COUNTERFEITS)
def test_counterfeit_is_refused_by_a_verifier_that_remembers_the_genuine_history(
    net: OfflineNetwork, checked: Checked, forgery: Forgery, case: str
):
    """A verifier that already verified every genuine token the counterfeit is made from
    (and so remembers their signatures) refuses it with the same code as a fresh one."""
    build, code = COUNTERFEITS[case]
    counterfeit = build(forgery)
    cat = net.add_token_user("Cat", "bank-b")
    verifier = cat.element.verifier
    assert verifier is not None
    genuine = [forgery.root, forgery.received, forgery.intercepted]
    genuine += [t for u in (forgery.mal, forgery.ann, forgery.ben) for t in u.element.tokens()]
    for token in genuine:
        with contextlib.suppress(OffpayError):  # the tokens a broken element made need not verify
            verifier.verify(token)
    assert len(verifier.remembered) > 0

    refused(code, verifier.verify, counterfeit)
    refused(code, verifier.fresh().verify, counterfeit)
    refused(code, checked.step, offer, forgery.mal, cat, counterfeit)
    assert cat.element.tokens() == [] and cat.tokens == net.money(0)
