"""Nothing in clear on the untrusted relays (issue 19, point 3): the card's session and
confirmation and the terminal module's upload are sealed to the intermediary's intake key
(offpay.wire.sealed_upload, offpay.bank.intake_key), and the PIN is enciphered to the card
(offpay.wire.enciphered_pin). The PoS app and the phone app carry ciphertext."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PIN, Checked, refused
from offpay.bank.engine import engine_id
from offpay.device.apdu import CLA_ISO, Command, Ins, Response
from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.privacy import LEARNS, Party
from offpay.sim.network import OfflineNetwork, User
from offpay.sim.recording import RecordedNetwork
from offpay.wire.codec import decode, encode
from offpay.wire.enciphered_pin import (
    EncipheredPin,
    PinChallenge,
    encipher_pin,
    open_challenge,
)
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CardInstruction,
    CardSession,
    IntakeKey,
    Liquidity,
    Operation,
    TerminalUpload,
)
from offpay.wire.sealed_upload import (
    SealedToIntermediary,
    accept_intake_key,
    seal_to_intermediary,
    sealed_to_intermediary,
)

SEK = 100

# What the relays carried in clear before: the payments, the card's log and counters, the PIN.
PAYMENT_FIELDS = (
    "offline-payment.payer_seq",
    "offline-payment.amount",
    "offline-payment.sender=device-id",
    "log-entry.payment",
    "card-session.log",
    "card-session.balance",
    "card-confirmation.balance",
    "terminal-upload.payments",
    "terminal-upload.sender=device-id",
)


class Clock:
    """A clock the test moves on."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def online_session(user: User) -> bytes:
    """The phone app's first half of a sync: what the card hands it for its intermediary."""
    client = CardClient(user.card.process)
    client.verify_pin(user.pin)
    return client.begin_online(
        engine_id(user.bank.name), Operation.SYNC, Money.zero(user.bank.currency)
    )


def pin_challenge(user: User) -> bytes:
    raw = user.card.process(Command(CLA_ISO, Ins.GET_CHALLENGE).to_bytes())
    return Response.from_bytes(raw).data


# --- what each relay receives ------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded() -> RecordedNetwork:
    """Top-ups, a shop charge, person-to-person payments with funding receipts, syncs of the
    cards and the terminal, recorded at every edge."""
    net = RecordedNetwork(liquidity=Liquidity.RECEIPTS)
    for name in net.banks:
        net.issue(name, 1_000_000 * SEK)
    checked = Checked(net)
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b", online=100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 50 * SEK)
    checked.charge(shop, bob, 30 * SEK)
    checked.charge(shop, alice, 10 * SEK)
    checked.sync(shop, bob, alice)
    alice.phone.defund(alice.pin, net.money(10 * SEK))
    return net


@pytest.mark.parametrize("party", [Party.POS_APP, Party.PHONE_APP, Party.RELAY], ids=str)
def test_no_relay_receives_a_payment_field_the_log_or_the_pin(
    recorded: RecordedNetwork, party: Party
):
    seen = {str(s) for s in recorded.recording.seen[party]}
    assert not seen & set(PAYMENT_FIELDS), sorted(seen & set(PAYMENT_FIELDS))
    assert not set(PAYMENT_FIELDS) & LEARNS[party]
    assert "apdu.verify_pin" not in seen and "apdu.verify_pin" not in LEARNS[party]
    assert "enciphered-pin.sealed" in seen  # the PIN crossed, enciphered


def test_the_relay_apps_carry_the_sealed_messages_and_the_intermediary_opens_them(
    recorded: RecordedNetwork,
):
    pos = {str(s) for s in recorded.recording.seen[Party.POS_APP]}
    phone = {str(s) for s in recorded.recording.seen[Party.PHONE_APP]}
    bank = {str(s) for s in recorded.recording.seen[Party.INTERMEDIARY]}
    assert "sealed-to-intermediary.sealed" in pos & phone
    assert {"card-session.log", "terminal-upload.payments", "card-confirmation.balance"} <= bank
    # what the phone still reads, by design: the instruction (the balance it shows)
    assert "card-instruction.balance" in phone


# --- sealed to the intermediary: bad paths -------------------------------------------------------


def test_a_session_sealed_to_one_intermediary_is_refused_by_another(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 100 * SEK)
    session = online_session(alice)
    sealed = sealed_to_intermediary(session)
    assert sealed is not None and sealed.receiver == engine_id("bank-a")
    checked.refused("wire.wrong_receiver", net.network.send, "bank-b", "card-session", session)
    # bank-b, had it the same key version, still cannot open it: the receiver is bound in
    moved = encode(dataclasses.replace(sealed, receiver=engine_id("bank-b")))
    checked.refused("crypto.bad_seal", net.network.send, "bank-b", "card-session", moved)
    instruction = net.network.send("bank-a", "card-session", session)
    CardClient(alice.card.process).apply_instruction(instruction)  # the genuine one still works


@pytest.mark.parametrize("kind", ["card-session", "terminal-upload"])
def test_an_altered_sealed_message_is_refused_and_changes_nothing(
    net: OfflineNetwork, checked: Checked, kind: str
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-a")
    checked.top_up(alice, 100 * SEK)
    checked.charge(shop, alice, 10 * SEK)
    if kind == "card-session":
        data = online_session(alice)
    else:
        data = shop.module.begin_sync(engine_id("bank-a"), shop.pos.records)
    sealed = sealed_to_intermediary(data)
    assert sealed is not None
    for flipped in (0, len(sealed.sealed) // 2, len(sealed.sealed) - 1):
        body = bytearray(sealed.sealed)
        body[flipped] ^= 0x01
        bad = encode(dataclasses.replace(sealed, sealed=bytes(body)))
        checked.refused("crypto.bad_seal", net.network.send, "bank-a", kind, bad)
    other_version = encode(dataclasses.replace(sealed, key_version=sealed.key_version + 7))
    checked.refused("crypto.intake_key_unknown", net.network.send, "bank-a", kind, other_version)
    net.network.send("bank-a", kind, data)  # the genuine one opens and settles


def test_a_replayed_sealed_session_is_answered_as_before_and_moves_nothing(
    net: OfflineNetwork, checked: Checked
):
    """Exactly-once is the signed message's, inside: the relay's retry gets the same answer."""
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 100 * SEK)
    client = CardClient(alice.card.process)
    client.verify_pin(alice.pin)
    session = client.begin_online(engine_id("bank-a"), Operation.TOP_UP, net.money(20 * SEK))
    assert sealed_to_intermediary(session) is not None
    first = net.network.send("bank-a", "card-session", session)
    before = checked.snapshot()
    again = checked.step(net.network.send, "bank-a", "card-session", session)
    assert again == first and checked.snapshot() == before


def test_the_card_refuses_an_intake_key_a_relay_swapped_in(net: OfflineNetwork):
    """The key comes signed by the card's own intermediary: another bank's key, a key signed by
    a device, or a key changed in an instruction does not take."""
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bank_a, bank_b = net.banks["bank-a"], net.banks["bank-b"]
    trust = bank_a.trust
    held = alice.card.state.intake_key
    assert held is not None and held.sender == bank_a.id
    with pytest.raises(OffpayError) as info:
        accept_intake_key(bank_b.intake.signed(), trust, "bank-a", held)
    assert info.value.code in ("wire.wrong_receiver", "crypto.bad_certificate")
    relay_key = IntakeKey(bank_a.id, "bank-a", held.version + 1, b"\x09" * 32)
    card_signed = sign(relay_key, alice.card._credential)
    with pytest.raises(OffpayError):
        accept_intake_key(card_signed, trust, "bank-a", held)  # type: ignore[arg-type]
    # an older key never replaces a newer one
    assert accept_intake_key(bank_a.intake.signed(), trust, "bank-a", held) is held
    # inside an instruction: a relay that swaps the renewed key breaks its signature
    bank_a.intake.rotate()
    session = online_session(alice)
    instruction = Signed.from_bytes(net.network.send("bank-a", "card-session", session))
    instr = decode(instruction.payload, CardInstruction)
    assert instr.intake_key is not None
    foreign = dataclasses.replace(instr, intake_key=bank_b.intake.signed())
    swapped = dataclasses.replace(instruction, payload=encode(foreign))
    refused(
        "crypto.bad_signature", CardClient(alice.card.process).apply_instruction, encode(swapped)
    )
    assert alice.card.state.intake_key == held


# --- renewal ------------------------------------------------------------------------------


def test_a_renewed_key_reaches_cards_and_terminals_and_the_old_one_lapses():
    clock = Clock()
    net = OfflineNetwork(clock=clock)
    for name in net.banks:
        net.issue(name, 1_000_000 * SEK)
    checked = Checked(net)
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    carol = net.add_user("Carol", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-a")
    bank = net.banks["bank-a"]
    checked.top_up(alice, 100 * SEK)
    checked.top_up(carol, 100 * SEK)
    assert alice.card.state.intake_key.version == 1  # type: ignore[union-attr]

    assert bank.intake.rotate(dt.timedelta(days=30)) == 2
    # Carol's card still holds key 1: what it seals opens during the grace period ...
    late = online_session(carol)
    assert sealed_to_intermediary(late).key_version == 1  # type: ignore[union-attr]
    # ... Alice syncs (sealed to key 1) and her card takes key 2 from the instruction
    checked.charge(shop, alice, 10 * SEK)
    checked.sync(alice, shop)
    assert alice.card.state.intake_key.version == 2  # type: ignore[union-attr]
    assert shop.module.state.intake_key.version == 2  # type: ignore[union-attr]
    assert sealed_to_intermediary(online_session(alice)).key_version == 2  # type: ignore[union-attr]

    clock.now += dt.timedelta(days=31)  # the grace period is over
    checked.refused("crypto.intake_key_unknown", net.network.send, "bank-a", "card-session", late)
    # an up-to-date device is not told again
    assert bank.intake.renewal(2) is None and bank.intake.renewal(1) is not None


def test_a_device_without_a_key_still_syncs_in_clear(net: OfflineNetwork, checked: Checked):
    """A card personalised before sealing holds no key: its session goes in clear, accepted,
    and the instruction brings it the key."""
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 100 * SEK)
    alice.card._state = dataclasses.replace(alice.card.state, intake_key=None)
    session = online_session(alice)
    assert sealed_to_intermediary(session) is None
    decode(Signed.from_bytes(session).payload, CardSession)
    CardClient(alice.card.process).apply_instruction(
        net.network.send("bank-a", "card-session", session)
    )
    assert alice.card.state.intake_key is not None
    assert sealed_to_intermediary(online_session(alice)) is not None


def test_the_terminal_upload_is_sealed_and_opens_only_for_its_intermediary(net: OfflineNetwork):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    alice.phone.top_up(PIN, net.money(100 * SEK))
    shop.pos.charge(alice.card.process, PIN, net.money(10 * SEK))
    upload = shop.module.begin_sync(engine_id("bank-b"), shop.pos.records)
    sealed = sealed_to_intermediary(upload)
    assert sealed is not None
    assert decode(upload, SealedToIntermediary).receiver == engine_id("bank-b")
    refused("wire.wrong_receiver", net.banks["bank-a"].intake.open, upload)
    opened = net.banks["bank-b"].intake.open(upload)
    assert len(decode(Signed.from_bytes(opened).payload, TerminalUpload).payments) == 1


@settings(max_examples=25, deadline=None)
@given(payload=st.binary(max_size=4096), flip=st.integers(min_value=0))
def test_sealed_to_intermediary_opens_only_as_sealed(payload: bytes, flip: int):
    net = _one_bank()
    bank = net.banks["bank-a"]
    key = decode(bank.intake.signed().payload, IntakeKey)
    data = seal_to_intermediary(payload, key)
    assert bank.intake.open(data) == payload
    sealed = decode(data, SealedToIntermediary)
    body = bytearray(sealed.sealed)
    body[flip % len(body)] ^= 0x80
    with pytest.raises(OffpayError) as info:
        bank.intake.open(encode(dataclasses.replace(sealed, sealed=bytes(body))))
    assert info.value.code == "crypto.bad_seal"


_NETS: list[OfflineNetwork] = []


def _one_bank() -> OfflineNetwork:
    if not _NETS:
        _NETS.append(OfflineNetwork(bank_names=("bank-a",)))
    return _NETS[0]


# --- the enciphered PIN ------------------------------------------------------------------------


def test_the_pos_app_relays_only_the_enciphered_pin(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    sent: list[bytes] = []
    real = alice.card.process

    def link(raw: bytes) -> bytes:
        sent.append(raw)
        return real(raw)

    checked.step(shop.pos.charge, link, alice.pin, net.money(10 * SEK))
    verify = [Command.from_bytes(r) for r in sent if Command.from_bytes(r).ins == Ins.VERIFY_PIN]
    assert len(verify) == 1
    assert alice.pin.encode() not in verify[0].data
    enciphered = decode(verify[0].data, EncipheredPin)
    # replayed: the card's challenge is spent; refused before a try is spent
    tries = alice.card.state.pin_tries_left
    refused("wire.replay", CardClient(real).verify_enciphered_pin, verify[0].data)
    assert alice.card.state.pin_tries_left == tries and not alice.card.transient.pin_verified
    # also when the card holds a new challenge: it answers another one
    pin_challenge(alice)
    refused("wire.replay", CardClient(real).verify_enciphered_pin, encode(enciphered))
    assert alice.card.state.pin_tries_left == tries


def test_an_altered_enciphered_pin_is_refused_without_spending_a_try(net: OfflineNetwork):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    challenge = open_challenge(pin_challenge(alice), alice.bank.trust)
    enciphered = decode(encipher_pin(alice.pin, challenge), EncipheredPin)
    body = bytearray(enciphered.sealed)
    body[-1] ^= 0x01
    bad = encode(dataclasses.replace(enciphered, sealed=bytes(body)))
    refused("crypto.bad_seal", CardClient(alice.card.process).verify_enciphered_pin, bad)
    assert alice.card.state.pin_tries_left == 3 and not alice.card.transient.pin_verified


def test_a_wrong_pin_enciphered_costs_a_try_and_the_right_one_restores_them(
    net: OfflineNetwork,
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    client = CardClient(alice.card.process)
    refused("pin.wrong", client.verify_pin, "0000", alice.bank.trust)
    assert alice.card.state.pin_tries_left == 2
    client.verify_pin(alice.pin, alice.bank.trust)
    assert alice.card.state.pin_tries_left == 3 and alice.card.transient.pin_verified


def test_a_pin_in_clear_is_no_longer_taken(net: OfflineNetwork):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    pin_challenge(alice)
    raw = Command(CLA_ISO, Ins.VERIFY_PIN, 0, 0, alice.pin.encode()).to_bytes()
    response = Response.from_bytes(alice.card.process(raw))
    assert not response.ok
    assert alice.card.state.pin_tries_left == 3 and not alice.card.transient.pin_verified


def test_the_pin_pad_refuses_a_pin_key_a_relay_swapped_in(net: OfflineNetwork):
    """The module checks the card's signature on the challenge against the root and that the
    challenge is the card's it is charging: a relay's own key, or another card's challenge,
    gets no PIN."""
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    mallory = net.add_user("Mallory", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    signed = Signed.from_bytes(pin_challenge(alice))
    challenge = decode(signed.payload, PinChallenge)
    swapped = dataclasses.replace(challenge, key=b"\x07" * 32)
    forged = encode(dataclasses.replace(signed, payload=encode(swapped)))
    refused("crypto.bad_signature", shop.module.encipher_pin, alice.pin, forged, alice.card_id)
    # the phone app, without the root, checks the signature against the card's certificate
    refused("crypto.bad_signature", open_challenge, forged, None)
    mallorys = pin_challenge(mallory)
    refused("crypto.bad_certificate", shop.module.encipher_pin, alice.pin, mallorys, alice.card_id)
    # a PIN of the wrong form never leaves the pad
    refused("wire.malformed", shop.module.encipher_pin, "12a4", signed.to_bytes(), alice.card_id)


@settings(max_examples=20, deadline=None)
@given(pin=st.text(alphabet="0123456789", min_size=4, max_size=12))
def test_any_pin_opens_only_for_its_card_and_challenge(pin: str):
    net = _one_bank()
    user = net.users.get("Pat") or net.add_user("Pat", "bank-a", pin="1234")
    challenge = open_challenge(pin_challenge(user), user.bank.trust)
    enciphered = decode(encipher_pin(pin, challenge), EncipheredPin)
    card = user.card
    from offpay.wire.enciphered_pin import decipher_pin

    private = card.transient.pin_challenge[1]  # type: ignore[index]
    assert decipher_pin(enciphered, user.card_id, private) == pin
    with pytest.raises(OffpayError):
        decipher_pin(enciphered, "card:bank-a:another", private)
    other = dataclasses.replace(enciphered, challenge=b"\x00" * 16)
    with pytest.raises(OffpayError):
        decipher_pin(other, user.card_id, private)
