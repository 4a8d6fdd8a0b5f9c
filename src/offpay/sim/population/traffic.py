"""What the real executors count of each event's traffic and of each device's storage, so that
a run shows the messages and bytes a scheme costs and the memory its devices need.

The unit, the same in every executor: **a message** is one command to a device and its answer
(an APDU command and response between a phone or PoS app and a card; a call of the PoS app on
its terminal module) or one request of an app to its intermediary and its answer (an HTTP
request); **its bytes** are the request's and the answer's lengths. An answer that is a refusal
raised in process (a module's or an intermediary's) counts the request only; a card's refusal
is a response APDU and counts. What the intermediaries and the central bank say to each other
behind an app's request (settlement, the notary, the revocation list) is the back office and is
not counted: the figures are the edge's, where radio, cards and phones set the limits.

**Storage** is a device's sealed state: the largest sealed record (:mod:`offpay.device.memory`)
a person's card wrote during the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from offpay.bench.storage import Meter
from offpay.device.apdu import Ins
from offpay.device.card import Card
from offpay.device.memory import SealedMemory
from offpay.device.reader import Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.policy import LIMITS, Scheme
from offpay.relay.phone import PhoneApp, confirmation_code
from offpay.relay.pos import PosApp
from offpay.sim.network import OfflineNetwork
from offpay.sim.population.scenario import Scenario
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token
from offpay.tokens.transfer import ReceiverSession, SenderSession
from offpay.transport.memory import MemoryNetwork
from offpay.wire.codec import encode
from offpay.wire.envelope import Signed

PIN = "1234"
# The optional limits a token element enforces (offpay.policy.LIMITS).
ELEMENT_LIMITS = tuple(f for f in LIMITS if f.optional and f.scheme is not Scheme.BALANCE)


_INS = frozenset(int(i) for i in Ins)


class Traffic:
    """Running totals of messages and bytes; the executors read them before and after each
    event. ``labels`` (when a list) records each message's label and its request's and answer's
    bytes, for calibration."""

    def __init__(self, *, labelled: bool = False) -> None:
        self.messages = 0
        self.bytes = 0
        self.labels: list[tuple[str, int, int]] | None = [] if labelled else None

    def add(self, label: str, sent: int, answered: int = 0) -> None:
        self.messages += 1
        self.bytes += sent + answered
        if self.labels is not None:
            self.labels.append((label, sent, answered))


def card_link(transmit: Transmit, traffic: Traffic) -> Transmit:
    """A card's interface whose every command (and its response) is counted: the benchmark's
    :class:`~offpay.bench.storage.Meter` for the bytes, labelled by the command's INS byte."""
    meter = Meter(transmit)

    def call(command: bytes) -> bytes:
        sent, received = meter.sent, meter.received
        response = meter(command)
        name = Ins(command[1]).name if command[1] in _INS else f"{command[1]:02x}"
        traffic.add(name, meter.sent - sent, meter.received - received)
        return response

    return call


class AppNetwork(MemoryNetwork):
    """An app's view of the network: its requests to an intermediary are counted, then sent
    on the shared network (whose routes, taps and hooks are the real ones)."""

    def __init__(self, network: MemoryNetwork, traffic: Traffic) -> None:  # no super(): a view
        self.inner = network
        self.traffic = traffic

    def send(self, to: str, kind: str, data: bytes) -> bytes:
        try:
            answer = self.inner.send(to, kind, data)
        except Exception:
            self.traffic.add(kind, len(data))
            raise
        self.traffic.add(kind, len(data), len(answer))
        return answer


def _size(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value)
    return 0


class CountedModule:
    """A terminal module as its PoS app sees it: each call a message, its byte arguments and
    answer its bytes; everything else (its state, read by the app) passes through."""

    CALLS = frozenset(
        {
            "request_payment",
            "accept_payment",
            "cancel_request",
            "begin_sync",
            "apply_instruction",
            "encipher_pin",  # the PIN pad: the card's challenge in, the enciphered PIN out
        }
    )

    def __init__(self, module: Any, traffic: Traffic) -> None:
        self.module = module
        self.traffic = traffic

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.module, name)
        if name not in self.CALLS:
            return value

        def call(*args: Any) -> Any:
            sent = _size(args)
            try:
                answer = value(*args)
            except Exception:
                self.traffic.add(name, sent)
                raise
            self.traffic.add(name, sent, _size(answer))
            return answer

        return call


def watch_storage(memory: SealedMemory, seen: Callable[[int], None]) -> None:
    """Tell ``seen`` the size of every sealed record ``memory`` writes."""
    write = memory.write

    def sealed_write(value: Any) -> None:
        write(value)
        assert memory.blob is not None
        seen(len(memory.blob))

    memory.write = sealed_write  # type: ignore[method-assign]


# -- calibration: the sizes the fast executors compose per event --------------------------------


class _Steps:
    """The labelled messages since the last look, by label (the last of each)."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.seen = 0

    def take(self) -> dict[str, tuple[int, int]]:
        assert self.traffic.labels is not None
        new = self.traffic.labels[self.seen :]
        self.seen = len(self.traffic.labels)
        return {label: (sent, answered) for label, sent, answered in new}


def _refused(call: Callable[[], Any]) -> None:
    try:
        call()
    except OffpayError:
        return
    raise AssertionError("calibration: a refusal did not happen")


def calibrate_cards(scenario: Scenario, bank_name: str) -> dict[str, int]:
    """Sizes of the balance scheme's messages and sealed card states, measured on real devices
    of the scenario's policy at an intermediary named ``bank_name``: each kind of payment and
    refusal, syncs with and without a log and a decline, a terminal's sync with records,
    declines and without. ``<label>_sent`` and ``<label>_got`` are a message's request and
    answer bytes; ``pay`` a payment's; ``blob_*`` the differences of a card's sealed records."""
    # The scenario's policy, with room for the calibration's few payments: its limits are
    # integers, which change a state's or message's size by a byte or two at most.
    policy = scenario.policy
    card_most = max(policy.card_max_balance, Money(100_00, scenario.currency))
    policy = dataclasses.replace(
        policy,
        card_max_offline_transactions=max(policy.card_max_offline_transactions, 4),
        terminal_max_offline_payments=max(policy.terminal_max_offline_payments, 4),
        card_max_balance=card_most,
        terminal_max_received=max(policy.terminal_max_received, card_most),
    )
    # A per-payment maximum, an offline or daily total or count, or offline hours are kept (they
    # are part of the card's sealed policy) but raised above anything the calibration meets.
    loose = Money(10 * (policy.terminal_max_received.minor + card_most.minor), scenario.currency)
    policy = dataclasses.replace(
        policy,
        payment_max=None if policy.payment_max is None else max(policy.payment_max, loose),
        card_max_offline_spent=None
        if policy.card_max_offline_spent is None
        else max(policy.card_max_offline_spent, loose),
        card_max_daily_spent=None
        if policy.card_max_daily_spent is None
        else max(policy.card_max_daily_spent, loose),
        card_max_daily_payments=None
        if policy.card_max_daily_payments is None
        else max(policy.card_max_daily_payments, 100),
        max_offline_hours=None
        if policy.max_offline_hours is None
        else max(policy.max_offline_hours, 24 * 366),
    )
    net = OfflineNetwork(bank_names=(bank_name,), currency=scenario.currency)
    bank = net.banks[bank_name]
    bank.publish_policy(dataclasses.replace(policy, issuer=bank_name, version=2))
    most = policy.card_max_balance.minor
    net.issue(bank_name, 2 * most)
    traffic = Traffic(labelled=True)
    steps = _Steps(traffic)
    money = net.money
    cards, phones, links, writes = [], [], [], []
    for n in range(2):
        customer = bank.open_customer(f"calibration-{n}")
        card = Card.manufacture(net.algorithm)
        bank.issue_card(customer, card.process, PIN)
        bank.fund(customer, money(most))
        sizes: list[int] = []
        watch_storage(card.memory, sizes.append)
        link = card_link(card.process, traffic)
        cards.append(card)
        links.append(link)
        writes.append(sizes)
        phones.append(PhoneApp(link, bank_name, AppNetwork(net.network, traffic), net.currency))
    customer = bank.open_customer("calibration-shop", merchant=True)
    module = TerminalModule.manufacture(net.algorithm)
    terminal_id = bank.issue_terminal(customer, module)
    counted = CountedModule(module, traffic)
    pos = PosApp(counted, bank_name, AppNetwork(net.network, traffic), net.clock)  # type: ignore[arg-type]
    out: dict[str, int] = {"blob_personalised": len(cards[0].memory.blob or b"")}

    def blob() -> int:
        return len(cards[0].memory.blob or b"")

    def record(taken: dict[str, tuple[int, int]], *labels: str, prefix: str = "") -> None:
        for label in labels:
            out[f"{prefix}{label}_sent"], out[f"{prefix}{label}_got"] = taken[label]

    small, half = money(max(1, most // 100)), money(most // 2)
    phones[0].top_up(PIN, half)  # the card's first session: no instruction held yet
    record(steps.take(), "BEGIN_ONLINE", "card-session", prefix="first_")
    phones[1].top_up(PIN, half)
    steps.take()
    out["blob_instruction"] = blob() - out["blob_personalised"]
    writes[0].clear()
    phones[0].sync(PIN)
    taken = steps.take()
    record(taken, "GET_CHALLENGE", "VERIFY_PIN", "BEGIN_ONLINE", "card-session")
    record(taken, "APPLY_INSTRUCTION")
    record(taken, "card-confirmation", "GET_STATUS")
    out["blob_session"] = max(writes[0]) - blob()
    out["blob_held"] = blob()
    # a request held open, then declined, the decline declared at the next sync
    writes[0].clear()
    request = phones[0].ask(phones[1].show_identity(), small)
    out["blob_open"] = writes[0][-1] - out["blob_held"]
    phones[0].decline(request)
    record(steps.take(), "DECLINE_REQUEST")
    out["blob_declined"] = blob() - out["blob_held"]
    phones[0].sync(PIN)
    taken = steps.take()
    out["decline"] = taken["card-session"][0] - out["card-session_sent"]
    # a shop: refused by a card that never paid, paid twice, refused by a card that paid
    _refused(lambda: pos.charge(links[0], PIN, money(most)))
    record(steps.take(), "GET_LAST_PAYMENT", prefix="never_")
    held = blob()
    # On the card's link the payment is sealed to the module (offpay.wire.sealed_payment); the
    # card, the module's record and every sync keep it as signed.
    out["pay_hop"] = len(pos.charge(links[0], PIN, small))
    last = cards[0].state.last_payment
    assert last is not None
    out["pay"] = len(last.to_bytes())
    record(steps.take(), "GET_IDENTITY", "request_payment", "PAY", "accept_payment", "encipher_pin")
    once = blob()
    pos.charge(links[0], PIN, small)
    steps.take()
    out["blob_entry"] = blob() - once - out["pay"]
    out["blob_last"] = once - held - 2 * out["pay"] - out["blob_entry"]
    _refused(lambda: pos.charge(links[0], PIN, money(most)))
    taken = steps.take()
    record(taken, "GET_LAST_PAYMENT", "cancel_request")
    out["pay_refused"] = sum(taken["PAY"])
    _refused(lambda: pos.charge(links[0], PIN, money(policy.terminal_max_received.minor + 1)))
    out["request_refused"] = sum(steps.take()["request_payment"])
    # person to person: paid; refused by the payer's card; refused by the payee's card
    request = phones[0].ask(phones[1].show_identity(), small)
    phones[0].accept(PIN, phones[1].pay(PIN, request, code=confirmation_code(request)))
    record(steps.take(), "REQUEST_PAYMENT", "RECEIVE")
    request = phones[0].ask(phones[1].show_identity(), cards[1].state.balance + money(1))
    _refused(lambda: phones[1].pay(PIN, request))
    phones[0].decline(request)
    out["pay_refused_p2p"] = sum(steps.take()["PAY"])
    _refused(lambda: phones[0].ask(phones[1].show_identity(), money(most + 1)))
    out["ask_refused"] = sum(steps.take()["REQUEST_PAYMENT"])
    # a sync carrying a log (two payments out, one in) and one decline
    state = cards[0].state
    out["log"] = sum(len(e.payment.to_bytes()) for e in state.log)
    out["entries"] = len(state.log)
    phones[0].sync(PIN)
    taken = steps.take()
    for label, part in (("BEGIN_ONLINE", 1), ("card-session", 0)):
        side = ("_sent", "_got")[part]
        grown = taken[label][part] - out[label + side] - out["decline"]
        out[f"{label}_entry"] = (grown - out["log"]) // out["entries"]
    # a terminal's sync with two records and the two requests its app declined, one without
    # anything, one with a declined request only
    out["records"] = len(pos.records)
    pos.sync()
    full = steps.take()["begin_sync"][1]
    pos.sync()
    record(steps.take(), "begin_sync", "terminal-upload", "apply_instruction")
    _refused(lambda: pos.charge(links[1], PIN, money(most)))
    steps.take()
    pos.sync()
    out["upload_declined"] = steps.take()["begin_sync"][1] - out["begin_sync_got"]
    grown = full - out["begin_sync_got"] - 2 * out["upload_declined"]
    out["upload_record"] = grown // out["records"]
    # the revocation list an instruction carries to a device that holds an older one, with
    # one device named and with two; the card keeps the names and the instruction
    held = blob()
    listed = []
    for device in (cards[1].state.card_id, terminal_id):
        net.central.revoke(device, "calibration")
        phones[0].sync(PIN)
        listed.append((steps.take()["card-session"][1] - out["card-session_got"], blob() - held))
    out["list_device"] = listed[1][0] - listed[0][0]
    out["list_base"] = listed[0][0] - out["list_device"]
    phones[0].sync(PIN)  # the next instruction carries no list; the names stay
    steps.take()
    out["blob_revoked"] = (blob() - held) // 2
    return out


# -- the token scheme --------------------------------------------------------------------------


def counted_transfer(
    sender: TokenElement,
    receiver: TokenElement,
    amount: Money,
    traffic: Traffic,
    now: int | None = None,
) -> Token:
    """:func:`~offpay.tokens.transfer.transfer_offline` with each of its four exchanges between
    the elements counted as a message (hellos, discovery proofs, offer and address, transfer
    and confirmation). A phase whose request the receiver refuses counts its request only; a
    phase whose request the sender cannot make (no token to offer) is not sent. ``now``: both
    phones' time (Unix seconds), told their elements."""
    s = SenderSession(sender, amount, now=now)
    r = ReceiverSession(receiver, amount, now=now)
    s_hello, r_hello = s.hello(), r.hello()
    traffic.add("token-hello", len(s_hello), len(r_hello))
    s_proof = s.on_hello(r_hello)
    r_proof = r.on_hello(s_hello)
    traffic.add("token-discovery-proof", len(s_proof), len(r_proof))
    s.on_proof(r_proof)
    r.on_proof(s_proof)
    s.users_agree(r.code)
    r.users_agree(s.code)
    offer = s.offer()
    try:
        address = r.on_offer(offer)
    except Exception:
        traffic.add("token-offer", len(offer))
        raise
    traffic.add("token-offer", len(offer), len(address))
    transfer = s.on_address(address)
    try:
        confirmation = r.on_transfer(transfer)
    except Exception:
        traffic.add("token-transfer", len(transfer))
        raise
    traffic.add("token-transfer", len(transfer), len(confirmation))
    s.on_confirmation(confirmation)
    assert r.received is not None
    return r.received


def token_size(token: Token) -> int:
    """A token's encoded size, its ancestry included."""
    return len(encode(token))


def publish_element_policy(net: OfflineNetwork, scenario: Scenario) -> dict[str, Signed]:
    """The scenario's limits as every intermediary's policy (version 2), if it sets any that
    token elements enforce (docs/limits.md); the desks' answers carry it. By bank."""
    policy = scenario.policy
    if all(getattr(policy, f.name) is None for f in ELEMENT_LIMITS):
        return {}
    return {
        bank: net.banks[bank].publish_policy(dataclasses.replace(policy, issuer=bank, version=2))
        for bank in net.banks
    }


def unlimited(*elements: TokenElement) -> tuple[TokenElement, ...]:
    """Calibration measures sizes with the run's policy in every answer, but its elements
    must make every payment it measures: they enforce none."""
    for element in elements:
        element.policy = None
    return elements


def held_size(element: TokenElement) -> int:
    """What an element stores: the encoded size of every token it holds."""
    return sum(token_size(t) for t in TokenElement.tokens(element))


def calibrate_tokens(scenario: Scenario, bank_name: str) -> dict[str, int]:
    """Sizes of the token scheme's messages and tokens, measured on real elements, apps and a
    desk of an intermediary named ``bank_name``: ``root`` a minted token; ``transfer`` and
    ``split`` what a transition adds to its parent's size, ``merge`` to its parents' and
    ``proof`` per parent; the four exchanges of a payment without their tokens; a vault
    address, deposit and withdrawal without their tokens and revocation list, ``address`` a
    renewal's address, ``listed`` what one revoked element adds to a list; ``sync`` an online
    moment that moves no money. Every desk answer carries the run's policy, as in the run."""
    net = OfflineNetwork(bank_names=(bank_name,), currency=scenario.currency)
    net.issue(bank_name, 3 * 100_000)
    publish_element_policy(net, scenario)  # every desk answer carries it, as in the run
    traffic = Traffic(labelled=True)
    steps = _Steps(traffic)
    users = [net.add_token_user(f"calibration-{n}", bank_name, online=100_000) for n in range(3)]
    for user in users:
        user.app.network = AppNetwork(user.app.network, traffic)
    money, out = net.money, {}
    now = int(net.clock().timestamp())  # the phones' time, which the discovery proofs carry
    users[0].app.sync()
    taken = steps.take()
    out["sync_sent"], out["sync_got"] = taken["token-sync"]
    unlimited(users[0].element)
    users[0].app.withdraw(money(10_000))
    taken = steps.take()
    (root,) = users[0].element.tokens()
    out["root"] = token_size(root)
    out["withdraw_sent"] = taken["token-withdraw"][0]
    out["withdraw_got"] = taken["token-withdraw"][1] - out["root"]
    e0, e1, e2 = (u.element for u in users)
    paid = counted_transfer(*unlimited(e0, e1), money(1_000), traffic, now)  # a split, a transfer
    taken = steps.take()
    (change,) = e0.tokens()
    out["split"] = token_size(change) - out["root"]
    out["transfer"] = token_size(paid) - token_size(change)
    out["hello_sent"], out["hello_got"] = taken["token-hello"]
    out["proof_sent"], out["proof_got"] = taken["token-discovery-proof"]
    out["offer_sent"] = taken["token-offer"][0] - token_size(change)
    out["offer_got"] = taken["token-offer"][1]
    out["transfer_sent"] = taken["token-transfer"][0] - token_size(paid)
    out["transfer_got"] = taken["token-transfer"][1]
    counted_transfer(*unlimited(e0, e2), money(2_000), traffic, now)
    counted_transfer(*unlimited(e0, e2), money(3_000), traffic, now)
    steps.take()
    parents = e2.tokens()
    counted_transfer(*unlimited(e2, e1), money(5_000), traffic, now)  # a merge of two
    steps.take()
    merged = max(e1.tokens(), key=lambda t: t.value.minor)
    two = token_size(merged) - out["transfer"] - sum(token_size(t) for t in parents)
    counted_transfer(*unlimited(e0, e1), money(1_000), traffic, now)
    steps.take()
    ones = [t for t in e1.tokens() if t.value.minor == 1_000]
    three_parents = [*ones, merged]
    counted_transfer(*unlimited(e1, e2), money(7_000), traffic, now)  # a merge of three
    steps.take()
    (three,) = [t for t in e2.tokens() if t.value.minor == 7_000]
    grown = token_size(three) - out["transfer"] - sum(token_size(t) for t in three_parents)
    out["proof"] = grown - two
    out["merge"] = two - 2 * out["proof"]
    # a deposit (vault address, then the token signed over), then a renewal
    token = e2.tokens()[0]
    unlimited(e0, e1, e2)
    users[2].app.deposit(token.value)
    taken = steps.take()
    out["vault_sent"], out["vault_got"] = taken["token-vault-address"]
    deposit = taken["token-deposit"]
    out["deposit_sent"] = deposit[0] - token_size(token) - out["transfer"]
    out["deposit_got"] = deposit[1]
    users[0].app.max_ancestry = 0
    renewed = [t for t in e0.tokens() if not t.is_root][-1]  # the last one renewed
    unlimited(e0, e1, e2)
    users[0].app.renew_long()
    renewal = steps.take()["token-deposit"]
    out["address"] = renewal[0] - out["deposit_sent"] - out["transfer"] - token_size(renewed)
    out["renewal_got"] = renewal[1] - out["root"]
    net.central.revoke(e2.element_id, "calibration")
    unlimited(e0, e1, e2)
    users[0].app.withdraw(money(100))
    out["listed"] = steps.take()["token-withdraw"][1] - out["root"] - out["withdraw_got"]
    return out
