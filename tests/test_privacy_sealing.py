"""The offline hop carries the payment sealed to its payee (issue 19, point 3): the relay (PoS
app, phones, an eavesdropper) reads which request it answers and nothing inside."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PIN, Checked
from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.privacy import LEARNS, Party
from offpay.sim.network import OfflineNetwork
from offpay.sim.recording import RecordedNetwork
from offpay.wire.codec import decode, encode
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.exposure import exposed
from offpay.wire.messages import PaymentRequest
from offpay.wire.sealed_payment import (
    SealedPayment,
    is_sealed,
    new_seal_key,
    open_payment,
    receiver_hash,
    request_id_answered,
    seal_payment,
)

SEK = 100
INSIDE = (
    "offline-payment.payer_seq",
    "offline-payment.payer_received",
    "offline-payment.funding",
    "offline-payment.sender=device-id",
    "log-entry.payment",
    "card-session.log",
)


def refuses(code: str, fn, *args) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OffpayError) as info:
        fn(*args)
    assert info.value.code == code, str(info.value)


def shop_payment(net: OfflineNetwork) -> tuple[bytes, bytes, object, object]:
    """A shop's request and the card's sealed answer, not yet given to the terminal."""
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    alice.phone.top_up(PIN, net.money(100 * SEK))
    card = CardClient(alice.card.process)
    request = shop.module.request_payment(card.identity(), net.money(30 * SEK))
    card.verify_pin(PIN)
    return request, card.pay(request), alice, shop


def test_the_card_seals_its_payment_to_the_key_in_the_payees_request(net: OfflineNetwork):
    request, sealed, alice, shop = shop_payment(net)
    req = payload_of(Signed.from_bytes(request), PaymentRequest)
    assert req.seal_to is not None and len(req.seal_to) == 32
    assert is_sealed(sealed)
    wrapper = decode(sealed, SealedPayment)
    assert wrapper.request_id == req.request_id
    assert shop.terminal_id.encode() not in sealed  # bound into the encryption
    assert wrapper.receiver_hash == receiver_hash(shop.terminal_id)
    assert request_id_answered(sealed) == req.request_id
    inner = alice.card.state.last_payment
    assert inner is not None and inner.payload not in sealed  # nothing inside in clear
    assert alice.card_id.encode() not in sealed
    # What a relay can read of it: the wrapper's three fields, no payment field.
    assert {str(s) for s in exposed(sealed)} == {
        "sealed-payment.receiver_hash",
        "sealed-payment.request_id",
        "sealed-payment.sealed",
    }
    shop.pos.receive(sealed)
    assert shop.module.state.offline_payments == 1


def test_a_resubmission_is_sealed_afresh_and_counted_once(net: OfflineNetwork):
    _, sealed, alice, shop = shop_payment(net)
    shop.pos.receive(sealed)
    again = CardClient(alice.card.process).last_payment()
    assert is_sealed(again) and again != sealed  # a fresh ephemeral key every time
    shop.pos.receive(again)  # the terminal hands the record back, nothing counted twice
    assert shop.module.state.offline_payments == 1


@pytest.mark.parametrize("field", ["receiver_hash", "request_id", "sealed"])
def test_a_relay_that_alters_the_sealed_payment_is_refused(net: OfflineNetwork, field: str):
    _, sealed, _, shop = shop_payment(net)
    wrapper = decode(sealed, SealedPayment)
    value = getattr(wrapper, field)
    if field == "receiver_hash":
        altered, code = bytes(8), "wire.wrong_receiver"
    elif field == "request_id":
        altered, code = bytes(16), "wire.replay"  # no open request has that id
    else:
        altered, code = value[:-1] + bytes([value[-1] ^ 1]), "crypto.bad_seal"
    bad = encode(dataclasses.replace(wrapper, **{field: altered}))
    before = shop.module.state
    refuses(code, shop.module.accept_payment, bad)
    assert shop.module.state == before
    shop.pos.receive(sealed)  # the genuine one still goes in


def test_a_payment_sealed_to_another_request_does_not_open(net: OfflineNetwork):
    """The payer's request id with another request's key: the key binds the payment to the
    request it answers."""
    _, sealed, alice, shop = shop_payment(net)
    card = CardClient(alice.card.process)
    other = shop.module.request_payment(card.identity(), net.money(1 * SEK))
    other_id = payload_of(Signed.from_bytes(other), PaymentRequest).request_id
    wrapper = decode(sealed, SealedPayment)
    swapped = encode(dataclasses.replace(wrapper, request_id=other_id))
    refuses("crypto.bad_seal", shop.module.accept_payment, swapped)


def test_open_payment_passes_a_payment_in_clear_and_names_a_declined_request():
    assert open_payment(b"\xa0", "x", lambda _rid: None) == b"\xa0"
    me = "card:bank-a:0123456789ab"
    sealed = encode(SealedPayment(receiver_hash(me), b"r" * 16, b"\x00" * 64))
    refuses("device.declined", open_payment, sealed, me, dict().get, {b"r" * 16})
    refuses("wire.replay", open_payment, sealed, "card:bank-a:0123456789ab", dict().get)


def test_person_to_person_payments_cross_the_phones_sealed(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    checked.top_up(alice, 100 * SEK)
    request = bob.phone.ask(alice.phone.show_identity(), net.money(20 * SEK))
    paid = alice.phone.pay(PIN, request)
    assert is_sealed(paid)
    assert bob.card_id.encode() not in paid and alice.card_id.encode() not in paid
    # A third card cannot open it, even with the request's id.
    carol = net.add_user("Carol", "bank-a")
    refuses("wire.wrong_receiver", carol.phone.accept, PIN, paid)
    bob.phone.accept(PIN, paid)
    assert bob.card_balance == net.money(20 * SEK)
    refuses("wire.replay", bob.phone.accept, PIN, paid)  # its key went with the request
    checked.sync(alice, bob)
    checked.conserved()


def test_a_declined_request_refuses_its_sealed_payment_as_declined(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-a")
    checked.top_up(alice, 100 * SEK)
    request = bob.phone.ask(alice.phone.show_identity(), net.money(20 * SEK))
    paid = alice.phone.pay(PIN, request)
    bob.phone.decline(request)
    refuses("device.declined", bob.phone.accept, PIN, paid)
    checked.sync(bob, alice)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)  # given back
    checked.conserved()


def test_the_relays_recorded_view_lacks_what_is_inside_the_payment():
    """Recorded across terminal and person-to-person payments with funding receipts: the
    eavesdropper on the offline hop sees no payer counter, offline receipts, funding payments
    or log; the payee's intermediary, which needs them, does."""
    from offpay.wire.messages import Liquidity

    net = RecordedNetwork(liquidity=Liquidity.RECEIPTS)
    for name in net.banks:
        net.issue(name, 1_000_000 * SEK)
    checked = Checked(net)
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 50 * SEK)
    checked.charge(shop, bob, 30 * SEK)  # carries Alice's payment as funding
    checked.sync(shop, bob, alice)
    relay = {str(s) for s in net.recording.seen[Party.RELAY]}
    bank = {str(s) for s in net.recording.seen[Party.INTERMEDIARY]}
    assert "sealed-payment.sealed" in relay
    for name in INSIDE:
        assert name not in relay
        assert name not in LEARNS[Party.RELAY]
    assert {"offline-payment.payer_seq", "offline-payment.funding"} <= bank


@settings(max_examples=30, deadline=None)
@given(
    payload=st.binary(max_size=2048),
    request_id=st.binary(min_size=16, max_size=16),
    flip=st.integers(min_value=0),
)
def test_a_sealed_payment_opens_only_as_it_was_sealed(payload: bytes, request_id: bytes, flip: int):
    """For any payment bytes: the payee's key opens exactly what the card sealed; any byte of
    the ciphertext changed, another device's id or another key, and it does not open."""
    private, public = new_seal_key(os.urandom)
    receiver = "terminal:bank-b:0123456789ab"
    request = PaymentRequest(
        receiver,
        "card:bank-a:ba9876543210",
        "bank-b",
        request_id,
        b"c" * 16,
        Money(1, "SEK"),
        seal_to=public,
    )
    signed = Signed(payload=payload, signature=b"s" * 64, chain=())
    sealed = seal_payment(signed, request)
    keys = {request_id: private}
    assert open_payment(sealed, receiver, keys.get) == signed.to_bytes()
    wrapper = decode(sealed, SealedPayment)
    i = flip % len(wrapper.sealed)
    body = wrapper.sealed[:i] + bytes([wrapper.sealed[i] ^ 0x01]) + wrapper.sealed[i + 1 :]
    spoiled = encode(dataclasses.replace(wrapper, sealed=body))
    refuses("crypto.bad_seal", open_payment, spoiled, receiver, keys.get)
    refuses("wire.wrong_receiver", open_payment, sealed, "terminal:bank-b:ffffffffffff", keys.get)
    # Another device's id under this one's hash: the full id is bound into the encryption.
    impostor = encode(dataclasses.replace(wrapper, receiver_hash=receiver_hash("card:x:y")))
    refuses("crypto.bad_seal", open_payment, impostor, "card:x:y", keys.get)
    other, _ = new_seal_key(os.urandom)
    refuses("crypto.bad_seal", open_payment, sealed, receiver, {request_id: other}.get)


def test_a_key_no_longer_in_ram_still_opens_its_payment_from_the_sealed_bytes():
    """The payee's key object is kept in RAM from its generation, a bounded number of them; a
    key pushed out (or a device switched off and on) opens its payment from the raw bytes its
    sealed state keeps, and a key's bytes never open another request's payment."""
    from offpay.wire import sealed_payment

    private, public = new_seal_key(os.urandom)
    receiver, request_id = "card:bank-b:0123456789ab", b"r" * 16
    request = PaymentRequest(
        receiver,
        "card:bank-a:ba9876543210",
        "bank-b",
        request_id,
        b"c" * 16,
        Money(1, "SEK"),
        seal_to=public,
    )
    signed = Signed(payload=b"payment", signature=b"s" * 64, chain=())
    sealed = seal_payment(signed, request)
    for _ in range(sealed_payment.KEYS_KEPT):  # as many newer requests as RAM keeps keys
        new_seal_key(os.urandom)
    assert open_payment(sealed, receiver, {request_id: private}.get) == signed.to_bytes()
    assert open_payment(sealed, receiver, {request_id: bytes(private)}.get) == signed.to_bytes()
    other, _ = new_seal_key(os.urandom)
    refuses("crypto.bad_seal", open_payment, sealed, receiver, {request_id: other}.get)
