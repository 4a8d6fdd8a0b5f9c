"""The token histories sealed on the phone-to-phone hop (issue 19, point 3): the sending
element seals its offer and transfer to a fresh key the receiving element signed into its
discovery proof (offpay.tokens.sealing); the two phone apps and an eavesdropper carry
ciphertext, and only the receiving element reads the token and its ancestors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import refused
from offpay.crypto.pki import Role
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.privacy import LEARNS, Party, not_granted
from offpay.sim.recording import RecordedNetwork, Recording
from offpay.tokens.sealing import SealedTokenMessage, SessionSealKey, open_token_message
from offpay.tokens.transfer import (
    DiscoveryProof,
    Offer,
    ReceiverSession,
    SenderSession,
    Transfer,
)
from offpay.wire.codec import decode, encode
from offpay.wire.envelope import Signed, open_signed, payload_of, sign
from offpay.wire.messages import IntakeKey
from offpay.wire.sealed_upload import SealedToIntermediary

if TYPE_CHECKING:
    from offpay.sim.network import TokenUser

SEK = 100

# What carries a token's history: the token, its ancestors' and siblings' owners and elements.
HISTORY_FIELDS = {
    "token.ancestors",
    "token.proofs",
    "token.siblings",
    "token-offer.token",
    "token-transfer.token",
}


def _users(net: RecordedNetwork, *names: str) -> list[TokenUser]:
    for bank in net.banks:
        net.issue(bank, 100_000 * SEK)
    return [net.add_token_user(n, "bank-a", online=1000 * SEK) for n in names]


@pytest.fixture(scope="module")
def hops() -> tuple[RecordedNetwork, Recording]:
    """A token withdrawn by Ann and passed Ann -> Ben -> Cai -> Dan (three ancestors at the
    end); the recording holds only what crossed the phone-to-phone hops."""
    net = RecordedNetwork()
    ann, ben, cai, dan = _users(net, "Ann", "Ben", "Cai", "Dan")
    ann.app.withdraw(net.money(100 * SEK))
    transfers = Recording(people=net.recording.people)
    net.recording = transfers  # the transfers' relay records here; the online edges do not
    net.transfer_tokens(ann, ben, 30 * SEK)  # a split: Ann keeps the change
    net.transfer_tokens(ben, cai, 30 * SEK)
    token = net.transfer_tokens(cai, dan, 30 * SEK)
    assert len(token.ancestors) == 1 and len(dan.element.verify(token).endorsers) >= 3
    return net, transfers


@pytest.mark.parametrize("party", [Party.PHONE_APP, Party.RELAY], ids=str)
def test_no_phone_or_relay_receives_a_token_history_in_a_transfer(
    hops: tuple[RecordedNetwork, Recording], party: Party
):
    _, transfers = hops
    seen = {str(s) for s in transfers.seen[party]}
    assert transfers.messages[party] == 3 * 8  # every message of three transfers was carried
    assert not seen & HISTORY_FIELDS, sorted(seen & HISTORY_FIELDS)
    assert {"token-sealed.sealed", "token-discovery-proof.seal_to"} <= seen
    assert not_granted(party, transfers.seen[party]) == []


def test_the_eavesdropper_is_granted_no_token_and_its_row_holds_on_the_whole_run(
    hops: tuple[RecordedNetwork, Recording],
):
    _, transfers = hops
    assert not HISTORY_FIELDS & LEARNS[Party.RELAY]
    assert "token.ancestors" not in LEARNS[Party.RELAY]
    # the phone app still reads the token desk's answers: freshly minted tokens (a
    # withdrawal, a renewal), no history; deposits and renewals go sealed to the intermediary
    assert "token.ancestors" in LEARNS[Party.PHONE_APP]
    assert "deposit-request.token" not in LEARNS[Party.PHONE_APP]
    assert not_granted(Party.RELAY, transfers.seen[Party.RELAY]) == []


def _discovered(net: RecordedNetwork, sender: TokenUser, receiver: TokenUser, minor: int):  # type: ignore[no-untyped-def]
    amount = Money(minor, net.currency)
    s, r = SenderSession(sender.element, amount), ReceiverSession(receiver.element, amount)
    s_proof, r_proof = s.on_hello(r.hello()), r.on_hello(s.hello())
    s.on_proof(r_proof)
    r.on_proof(s_proof)
    s.users_agree(r.code)
    r.users_agree(s.code)
    return s, r, r_proof


def test_the_receiver_signs_its_session_key_and_opens_what_was_sealed_to_it():
    net = RecordedNetwork()
    ann, ben = _users(net, "Ann", "Ben")
    ann.app.withdraw(net.money(100 * SEK))
    s, r, r_proof = _discovered(net, ann, ben, 40 * SEK)
    proof, _ = open_signed(
        Signed.from_bytes(r_proof),
        DiscoveryProof,
        ann.element.trust,
        Role.ELEMENT,
        receiver=ann.element.element_id,
    )
    assert r.seal_key is not None and proof.seal_to == r.seal_key.public
    assert s.seal_key is None  # the sender receives nothing that needs sealing
    offer = s.offer()
    sealed = decode(offer, SealedTokenMessage)
    assert sealed.session == s.session
    assert s.offered is not None and s.offered.id not in offer
    inside = open_token_message(offer, ann.element_id, ben.element_id, r.session, r.seal_key)
    assert isinstance(decode(Signed.from_bytes(inside).payload, Offer), Offer)
    transfer = s.on_address(r.on_offer(offer))
    inside = open_token_message(transfer, ann.element_id, ben.element_id, r.session, r.seal_key)
    assert decode(Signed.from_bytes(inside).payload, Transfer).token == s.sent
    s.on_confirmation(r.on_transfer(transfer))
    assert s.confirmed and ben.tokens == net.money(40 * SEK)


def test_a_sealed_offer_handed_to_another_receiver_is_refused_and_changes_nothing():
    net = RecordedNetwork()
    ann, ben, cat = _users(net, "Ann", "Ben", "Cat")
    ann.app.withdraw(net.money(100 * SEK))
    s, _, _ = _discovered(net, ann, ben, 50 * SEK)
    _, cat_r, _ = _discovered(net, ann, cat, 50 * SEK)
    refused("wire.wrong_receiver", cat_r.on_offer, s.offer())
    assert cat_r.offered is None and cat_r.address is None


def test_a_sealed_transfer_handed_to_another_receiver_is_refused_and_changes_nothing():
    net = RecordedNetwork()
    ann, ben, cat = _users(net, "Ann", "Ben", "Cat")
    ann.app.withdraw(net.money(100 * SEK))
    s, r, _ = _discovered(net, ann, ben, 50 * SEK)
    to_cat, cat_r, _ = _discovered(net, ann, cat, 50 * SEK)
    transfer = s.on_address(r.on_offer(s.offer()))
    cat_r.on_offer(to_cat.offer())
    refused("wire.wrong_receiver", cat_r.on_transfer, transfer)
    assert cat_r.received is None and cat.tokens == net.money(0)
    r.on_transfer(transfer)  # the right receiver still takes it
    assert ben.tokens == net.money(50 * SEK)


def test_a_sealed_message_opens_only_with_its_session_key():
    net = RecordedNetwork()
    ann, ben = _users(net, "Ann", "Ben")
    ann.app.withdraw(net.money(100 * SEK))
    s, r, _ = _discovered(net, ann, ben, 50 * SEK)
    offer = s.offer()
    other = SessionSealKey(ben.element.random)
    refused(
        "crypto.bad_seal",
        open_token_message,
        offer,
        ann.element_id,
        ben.element_id,
        r.session,
        other,
    )
    # sealed to the right key, but the info binds another sender: refused as well
    refused(
        "crypto.bad_seal",
        open_token_message,
        offer,
        "element-mallory",
        ben.element_id,
        r.session,
        r.seal_key,
    )
    refused("wire.replay", open_token_message, offer, ann.element_id, ben.element_id, b"x", other)
    assert r.offered is None
    r.on_offer(offer)
    assert r.offered == s.offered


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0), st.integers(0, 7))
def test_an_altered_sealed_transfer_is_refused_and_changes_nothing(at: int, bit: int):
    net = RecordedNetwork()
    ann, ben = _users(net, "Ann", "Ben")
    ann.app.withdraw(net.money(100 * SEK))
    s, r, _ = _discovered(net, ann, ben, 50 * SEK)
    transfer = s.on_address(r.on_offer(s.offer()))
    sealed = decode(transfer, SealedTokenMessage)
    flipped = bytearray(sealed.sealed)
    flipped[at % len(flipped)] ^= 1 << bit
    altered = encode(SealedTokenMessage(sealed.receiver_hash, sealed.session, bytes(flipped)))
    with pytest.raises(OffpayError) as info:
        r.on_transfer(altered)
    assert info.value.code in {"crypto.bad_seal", "wire.malformed"}
    assert r.received is None and ben.tokens == net.money(0)
    r.on_transfer(transfer)
    assert ben.tokens == net.money(50 * SEK)


# --- part (b): deposits and renewals sealed to the intermediary ------------------------------

# What a deposit or renewal request shows of the token it returns (its history included).
DEPOSIT_FIELDS = {"deposit-request.token", "deposit-request.renew_to"}


def _cut_deposits(net: RecordedNetwork) -> None:
    """Every deposit request is lost on the way (a cut connection): it stays in the app's
    outbox, as the element sealed it."""
    real = net.network.send

    def send(to: str, kind: str, data: bytes) -> bytes:
        if kind == "token-deposit":
            raise OffpayError("connection lost", code="network.cut")
        return real(to, kind, data)

    net.network.send = send  # type: ignore[method-assign]


def _taken(recording: Recording) -> Recording:
    """What ``recording`` holds so far, which then starts afresh (every party's view records
    into that same object)."""
    copy = Recording(seen={p: set(s) for p, s in recording.seen.items()}, people=recording.people)
    recording.seen.clear()
    recording.messages.clear()
    return copy


def test_the_phone_app_carries_deposits_and_renewals_sealed_and_sees_no_history():
    """Tokens with ancestors renewed and deposited: the app forwards sealed requests, the
    intermediary opens them and reads the token and its history; the app reads none of it.
    What it still reads is the answer: a renewal's freshly minted token, with no history."""
    net = RecordedNetwork()
    ann, ben, cai = _users(net, "Ann", "Ben", "Cai")
    ann.app.withdraw(net.money(100 * SEK))
    net.transfer_tokens(ann, ben, 60 * SEK)
    net.transfer_tokens(ben, cai, 60 * SEK)
    cai.app.max_ancestry = 0  # renew anything with an ancestor at the next online moment
    _taken(net.recording)  # the withdrawal and the transfers before
    (fresh,) = cai.app.renew_long()
    assert fresh.value == net.money(60 * SEK)
    assert fresh.ancestors == () and fresh.siblings == ()
    renewal = _taken(net.recording)
    net.transfer_tokens(cai, ben, 60 * SEK)
    _taken(net.recording)
    ben.app.deposit(net.money(60 * SEK))  # a token with an ancestor, back to Ben's wallet
    assert ben.online == net.money(1060 * SEK) and ben.tokens == net.money(0)
    deposit = net.recording
    for recording in (renewal, deposit):
        seen = {str(s) for s in recording.seen[Party.PHONE_APP]}
        assert "sealed-to-intermediary.sealed" in seen
        assert not {s for s in seen if s.startswith("deposit-request.")}, sorted(seen)
        assert not_granted(Party.PHONE_APP, recording.seen[Party.PHONE_APP]) == []
        # the intermediary opened it: it reads the returned token and its history
        assert {"deposit-request.token", "token.ancestors"} <= {
            str(s) for s in recording.seen[Party.INTERMEDIARY]
        }
    # a deposit's answer carries no token: the app reads no token field at all
    deposit_seen = {str(s) for s in deposit.seen[Party.PHONE_APP]}
    assert not {s for s in deposit_seen if s.startswith("token.")}, sorted(deposit_seen)
    net.check_conservation()


def test_the_element_keeps_its_intermediarys_intake_key_from_provisioning():
    net = RecordedNetwork()
    (ann,) = _users(net, "Ann")
    key = ann.element.intake_key
    assert key is not None and key.institution == "bank-a"
    assert key == payload_of(ann.bank.intake.signed(), IntakeKey)  # type: ignore[arg-type]


def test_a_swapped_intake_key_is_refused_by_the_element():
    net = RecordedNetwork()
    (ann,) = _users(net, "Ann")
    held = ann.element.intake_key
    # another intermediary's genuine key, handed to Ann's element by a relay
    refused(
        "wire.wrong_receiver",
        ann.element.take_intake_key,
        net.banks["bank-b"].intake.signed(),
        "bank-a",
    )
    # a key the relay signs itself (with an element's key, not the intermediary's engine)
    forged = IntakeKey(ann.element_id, "bank-a", 99, bytes(32))
    with pytest.raises(OffpayError) as info:
        ann.element.take_intake_key(sign(forged, ann.element.credential), "bank-a")
    assert info.value.code.startswith("crypto.")
    assert ann.element.intake_key == held


def test_a_sealed_deposit_opened_by_another_intermediary_or_altered_is_refused():
    net = RecordedNetwork()
    ann, ben = _users(net, "Ann", "Ben")
    ann.app.withdraw(net.money(100 * SEK))
    net.transfer_tokens(ann, ben, 40 * SEK)
    real = net.network.send
    _cut_deposits(net)
    with pytest.raises(OffpayError):
        ben.app.deposit(net.money(40 * SEK))
    ((kind, sealed),) = ben.app.outbox
    assert kind == "token-deposit" and decode(sealed, SealedToIntermediary).receiver
    net.network.send = real  # type: ignore[method-assign]
    before = (ben.online, net.token_vaults(), net.central.mint.outstanding())
    # handed to another intermediary: it is not sealed to it
    refused("wire.wrong_receiver", real, "bank-b", "token-deposit", sealed)
    # altered on the way
    inner = decode(sealed, SealedToIntermediary)
    flipped = bytearray(inner.sealed)
    flipped[len(flipped) // 2] ^= 1
    altered = encode(SealedToIntermediary(inner.receiver, inner.key_version, bytes(flipped)))
    refused("crypto.bad_seal", real, "bank-a", "token-deposit", altered)
    # sealed to another key version than the one it names
    relabelled = encode(SealedToIntermediary(inner.receiver, inner.key_version + 1, inner.sealed))
    refused("crypto.intake_key_unknown", real, "bank-a", "token-deposit", relabelled)
    assert (ben.online, net.token_vaults(), net.central.mint.outstanding()) == before
    ben.app.retry_pending()  # the genuine request still completes, once
    assert ben.online == net.money(1040 * SEK) and not ben.app.outbox
    net.check_conservation()
