"""A device switched off and on again (``offpay`` keeps cards and terminal modules between
commands): the same device, its sealed memory as it was left, and the anti-rollback check
intact, for any history of writes."""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offpay.crypto.keys import Signer
from offpay.crypto.sealing import Sealer
from offpay.device.card import Card, key_fingerprint
from offpay.device.image import DeviceImage, MemoryImage
from offpay.device.memory import SealedMemory
from offpay.device.reader import CardClient
from offpay.device.terminal import TerminalModule
from offpay.drive.vault import VaultError, load_image, save_image
from offpay.errors import DeviceStateError, PinError, SealError
from offpay.sim.network import OfflineNetwork


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=8), st.data())
def test_a_restored_memory_reads_the_last_write_and_refuses_any_older_one(
    values: list[bytes], data: st.DataObject
) -> None:
    memory = SealedMemory("device-1")
    blobs = []
    for value in values:
        memory.write(value)
        blobs.append(memory.blob)
    image = memory.image()
    with tempfile.TemporaryDirectory() as tmp:  # through the file, as between commands
        path = Path(tmp) / "d.card"
        save_image(path, DeviceImage(Signer.generate(), image, None))
        image = load_image(path).memory
    restored = SealedMemory.restore("device-1", image)
    assert restored.read() == values[-1]
    restored.write(b"next")  # the counter carries on from where it was
    assert restored.image().counter == len(values) + 1
    if len(blobs) > 1:
        old = blobs[data.draw(st.integers(0, len(blobs) - 2))]
        with pytest.raises(DeviceStateError, match="rolled back"):
            SealedMemory.restore("device-1", MemoryImage(image.key, image.counter, old)).read()
    with pytest.raises(SealError):
        SealedMemory.restore("device-2", image).read()  # another device's record


def test_a_card_and_a_terminal_carry_on_after_a_power_cut() -> None:
    net = OfflineNetwork()
    net.issue("bank-a", 1_000_00)
    alice = net.add_user("alice", "bank-a", online=500_00)
    shop = net.add_merchant("shop", "bank-a")
    alice.phone.top_up(alice.pin, net.money(100_00))
    shop.pos.charge(alice.card.process, alice.pin, net.money(10_00))

    card = Card.from_image(alice.card.image())
    module = TerminalModule.from_image(shop.module.image())
    assert card.state == alice.card.state
    assert module.state == shop.module.state
    assert not card.transient.pin_verified  # RAM is empty after a power cut
    shop.pos.module = module
    shop.pos.charge(card.process, alice.pin, net.money(5_00))
    assert CardClient(card.process).status().balance == net.money(85_00)
    assert module.state.received == net.money(15_00)
    with pytest.raises(DeviceStateError):
        TerminalModule.from_image(card.image())  # a card's image is not a module's
    net.check_conservation()


def test_a_damaged_device_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "x.card"
    for text in ("", "{}", '{"hardware": {}, "memory": null}', "[1]"):
        path.write_text(text)
        with pytest.raises(VaultError, match="damaged"):
            load_image(path)
    with pytest.raises(VaultError, match="missing"):
        load_image(tmp_path / "none.card")


_DEVICE_STEPS = st.lists(
    st.sampled_from(["alice pays the shop", "bob pays alice", "ask unanswered", "sync"]),
    min_size=1,
    max_size=8,
)


@settings(max_examples=6, deadline=None)
@given(_DEVICE_STEPS)
def test_after_any_payments_and_syncs_a_fresh_unseal_reads_the_devices_state(
    steps: list[str],
) -> None:
    """Cards and a terminal store only what each command changed; whatever the history, a
    device switched off and on again (its sealed memory unsealed afresh) reads exactly the
    state it had, and an earlier copy of its memory is refused."""
    net = OfflineNetwork()
    net.issue("bank-a", 10_000_00)
    alice = net.add_user("alice", "bank-a", online=1_000_00)
    bob = net.add_user("bob", "bank-a", online=1_000_00)
    shop = net.add_merchant("shop", "bank-a")
    for user in (alice, bob):
        user.phone.top_up(user.pin, net.money(100_00))
    first = {"alice": alice.card.image(), "shop": shop.module.image()}
    for step in steps:
        busy = max(len(u.card.state.log) + len(u.card.state.open_requests) for u in (alice, bob))
        if busy >= 3:  # within the pilot's limits (5 offline transactions a card)
            step = "sync"
        if step == "alice pays the shop":
            shop.pos.charge(alice.card.process, alice.pin, net.money(1_00))
        elif step == "bob pays alice":
            request = alice.phone.ask(bob.phone.show_identity(), net.money(2_00))
            alice.phone.accept(alice.pin, bob.phone.pay(bob.pin, request))
        elif step == "ask unanswered":
            alice.phone.ask(bob.phone.show_identity(), net.money(3_00))
        else:
            alice.phone.sync(alice.pin)
            bob.phone.sync(bob.pin)
            shop.pos.sync()
        for card in (alice.card, bob.card):
            assert Card.from_image(card.image()).state == card.state
        assert TerminalModule.from_image(shop.module.image()).state == shop.module.state
    devices = (("alice", Card, alice.card), ("shop", TerminalModule, shop.module))
    for name, kind, device in devices:
        now = device.image()
        if now.memory.counter == first[name].memory.counter:
            continue  # the history did not touch this device: nothing to roll back
        rolled_back = MemoryImage(now.memory.key, now.memory.counter, first[name].memory.blob)
        with pytest.raises(DeviceStateError, match="rolled back"):
            _ = kind.from_image(dataclasses.replace(now, memory=rolled_back)).state  # type: ignore[attr-defined]


def test_a_device_written_by_the_earlier_layout_still_reads() -> None:
    """A card saved before sealed memory was split into a head and segments (its whole state
    sealed at once) reads back, carries on in the current layout, and its old memory written
    back afterwards is refused as rolled back."""
    net = OfflineNetwork()
    net.issue("bank-a", 1_000_00)
    alice = net.add_user("alice", "bank-a", online=500_00)
    alice.phone.top_up(alice.pin, net.money(100_00))
    now = alice.card.image()
    state = alice.card.state
    owner = f"offpay-memory\x00{key_fingerprint(now.signer)}".encode()
    earlier = Sealer(now.memory.key).seal(pickle.dumps((now.memory.counter, state)), owner)
    image = dataclasses.replace(
        now, memory=MemoryImage(now.memory.key, now.memory.counter, earlier)
    )
    card = Card.from_image(image)
    assert card.state == state
    with pytest.raises(PinError):
        CardClient(card.process).verify_pin("0000")  # a wrong PIN costs a try: a write
    assert card.memory.blob != earlier and card.state.pin_tries_left == state.pin_tries_left - 1
    rolled_back = MemoryImage(now.memory.key, card.memory.image().counter, earlier)
    with pytest.raises(DeviceStateError, match="rolled back"):
        _ = Card.from_image(dataclasses.replace(image, memory=rolled_back)).state
