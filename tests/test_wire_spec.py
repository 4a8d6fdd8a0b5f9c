"""Issue 16, point 4: the wire specification (``src/offpay/wire/offpay.cddl``, explained in
docs/wire.md) cannot drift from the code.

(a) Every message type the code registers has a CDDL rule with the same fields and types, every
    HTTP route and every card command has its rules, and the CDDL names nothing the code lacks.
(b) Real flows of both schemes run on the in-process network; every body that crosses a hop
    (HTTP routes, the card's APDUs, the token phones' offline messages) is captured and
    validated against the CDDL by a real validator (pycddl, the Rust ``cddl`` crate), and each
    CBOR body is checked to be the deterministic encoding with a signature over the domain tag.
(c) Mutated encodings (a field missing, of the wrong type, an extra key, a float amount) are
    refused by the validator and by the code's own decoder alike.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import enum
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import anyio
import cbor2
import cddlparser
import httpx
import pycddl
import pytest
from cddlparser import ast as cddl_ast
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from hypothesis import given
from hypothesis import strategies as st

import offpay.crypto.revocation
import offpay.device.terminal
import offpay.tokens.messages
import offpay.tokens.model
import offpay.tokens.transfer
import offpay.wire.envelope
import offpay.wire.messages
from offpay.attacks.tools import card_copy
from offpay.central.disclosure import ask_disclosure
from offpay.device import card as card_module
from offpay.device.apdu import SW, Command, Ins, Response
from offpay.device.card import Card
from offpay.errors import EncodingError, MoneyError, OffpayError, Refused
from offpay.liabilities.publish import publish
from offpay.money import CURRENCIES, MAX_MINOR, Money
from offpay.service.app import BANK_KINDS, CENTRAL_KINDS, TOKEN_KINDS, create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.problems import Problem, problem_of
from offpay.service.serve import build
from offpay.sim.network import OfflineNetwork, TokenUser, User
from offpay.sim.token_demo import break_sign_once
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token
from offpay.tokens.sealing import open_token_message
from offpay.tokens.transfer import ReceiverSession, SenderSession
from offpay.wire.codec import Message, decode, encode, registered
from offpay.wire.envelope import DOMAIN, Signed, payload_of
from offpay.wire.messages import (
    Liquidity,
    OfflinePayment,
    Operation,
    PaymentRequest,
    SessionStart,
)
from offpay.wire.spec import cddl_text

SRC = Path(offpay.wire.envelope.__file__).resolve().parents[1]  # src/offpay
SEK = 100
MESSAGE_MODULES = (
    offpay.wire.envelope,
    offpay.wire.messages,
    offpay.crypto.revocation,
    offpay.device.terminal,
    offpay.tokens.model,
    offpay.tokens.messages,
    offpay.tokens.transfer,
)
KINDS = CENTRAL_KINDS + BANK_KINDS + TOKEN_KINDS
# Rules that are neither a message, an envelope, an enumeration, a route nor a card command:
# the spec's shared vocabulary.
SHARED = frozenset(
    {
        "money",
        "minor-units",
        "negative-minor-units",
        "currency",
        "certificate-chain",
        "der-certificate",
        "empty",
        "raw-request-id",
        "raw-public-key",
        "raw-chunk",
        "card-payment",  # what a card hands over: sealed to the payee, or in clear
        # what a device hands its relay for its intermediary: sealed to it, or in clear
        "card-session-sent",
        "card-confirmation-sent",
        "terminal-upload-sent",
        "token-deposit-sent",
        # what a token element hands over: sealed to the receiving element, or in clear
        "token-offer-sent",
        "token-transfer-sent",
        "refusal",
        "problem",
    }
)
PRELUDE = {str: "tstr", bytes: "bstr", int: "int", bool: "bool"}


# --- reading the CDDL (cddlparser, a CDDL parser) ----------------------------------------------


def _text(node: cddl_ast.CDDLNode) -> str:
    """A node's CDDL, without comments, on one line."""
    raw = re.sub(r";[^\n]*", "", node.serialize())
    return re.sub(r"\s+", " ", raw).strip().rstrip(",").strip()


@dataclass(frozen=True)
class Spec:
    rules: dict[str, str]  # name -> the rule's type, as text
    maps: dict[str, list[tuple[str, str]]]  # name -> (key, type) of a map rule, in order
    optional: dict[str, set[str]]  # name -> the keys of a map rule marked ``?`` (may be absent)

    def resolve(self, text: str) -> str:
        """``text`` with every alias (a rule that is one name, or an array of one name)
        replaced by what it stands for, until nothing changes."""
        aliases = {
            name: body
            for name, body in self.rules.items()
            if re.fullmatch(r"[a-z][a-z0-9-]*|\[\* [a-z][a-z0-9-]*\]", body)
        }
        while True:
            done = re.sub(
                r"(?<![\w.-])[a-z][a-z0-9-]*(?![\w.-])",
                lambda m: aliases.get(m.group(0), m.group(0)),
                text,
            )
            if done == text:
                return text
            text = done

    def choices(self, name: str) -> set[str]:
        """The text values of a rule that is a choice of text values."""
        return {v.strip().strip('"') for v in self.rules[name].split(" / ")}


def _spec() -> Spec:
    tree = cddlparser.parse(cddl_text())
    rules: dict[str, str] = {}
    maps: dict[str, list[tuple[str, str]]] = {}
    optional: dict[str, set[str]] = {}
    for rule in tree.rules:
        name = rule.name.name
        assert name not in rules, f"rule {name} is defined twice"
        rules[name] = _text(rule.type)
        kind = rule.type.types[0] if isinstance(rule.type, cddl_ast.Type) else None
        if isinstance(kind, cddl_ast.Map):
            assert len(kind.groupChoices) == 1, f"{name}: a map has one form"
            entries = []
            optional[name] = set()
            for entry in kind.groupChoices[0].groupEntries:
                assert entry.key is not None, name
                key = entry.key.type
                label = key.name if isinstance(key, cddl_ast.Typename) else key.value
                if entry.occurrence is not None:
                    assert _text(entry.occurrence) == "?", f"{name}.{label}: only ? is used"
                    optional[name].add(label)
                entries.append((label, _text(entry.type)))
            maps[name] = entries
    return Spec(rules, maps, optional)


SPEC = _spec()


@dataclass
class Validators:
    """One compiled schema per root rule: pycddl validates against a schema's first rule."""

    cache: dict[str, pycddl.Schema] = field(default_factory=dict)

    def schema(self, rule: str) -> pycddl.Schema:
        if rule not in self.cache:
            assert rule in SPEC.rules, f"the CDDL has no rule {rule}"
            self.cache[rule] = pycddl.Schema(f"wire-root = {rule}\n{cddl_text()}")
        return self.cache[rule]

    def is_raw(self, rule: str) -> bool:
        """Whether ``rule`` describes bytes carried as they are (a byte string, not CBOR)."""
        body = SPEC.rules[rule]
        while body in SPEC.rules:  # a rule that names another
            body = SPEC.rules[body]
        return body.split(" ")[0] == "bstr"

    def check(self, rule: str, data: bytes) -> None:
        """Validate bytes as they travel: raw bytes are validated as the byte string they are."""
        self.schema(rule).validate_cbor(cbor2.dumps(data) if self.is_raw(rule) else data)


VALIDATORS = Validators()


# --- what the code says --------------------------------------------------------------------------


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _signed_of(hint: Any) -> type[Message] | None:
    """``M`` for a ``Signed[M]`` hint."""
    if get_origin(hint) is Signed:
        (inner,) = get_args(hint)
        return inner  # type: ignore[no-any-return]
    return None


def expected_type(hint: Any) -> str:
    """The CDDL a field of type ``hint`` is encoded as (see offpay.wire.codec)."""
    if hint in PRELUDE:
        return PRELUDE[hint]
    if hint is Money:
        return "money"
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        real = [a for a in get_args(hint) if a is not type(None)]
        assert len(real) == 1 and len(get_args(hint)) == 2, hint
        return f"{expected_type(real[0])} / nil"
    if origin is tuple:
        item, ellipsis = get_args(hint)
        assert ellipsis is Ellipsis, hint
        return f"[* {expected_type(item)}]"
    inner = _signed_of(hint)
    if inner is not None:
        return f"signed-{inner.TYPE}"
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.TYPE
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _kebab(hint.__name__)
    raise AssertionError(f"no CDDL for field type {hint!r}")


def _code_messages() -> dict[str, type[Message]]:
    """The message types the package defines (a test module's own do not count)."""
    return {tag: cls for tag, cls in registered().items() if cls.__module__.startswith("offpay.")}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_hints() -> Iterator[tuple[type[Message], str, Any]]:
    for cls in _code_messages().values():
        for f in dataclasses.fields(cls):
            yield cls, f.name, _hints(cls)[f.name]


def _walk_hint(hint: Any) -> Iterator[Any]:
    yield hint
    for arg in get_args(hint):
        yield from _walk_hint(arg)


def _enums() -> dict[str, type[enum.Enum]]:
    found = {}
    for _, _, hint in _field_hints():
        for part in _walk_hint(hint):
            if isinstance(part, type) and issubclass(part, enum.Enum):
                found[_kebab(part.__name__)] = part
    return found


def _signed_payloads() -> set[str]:
    """Every message type the code carries inside a ``Signed`` field."""
    found = set()
    for _, _, hint in _field_hints():
        for part in _walk_hint(hint):
            inner = _signed_of(part)
            if inner is not None:
                found.add(inner.TYPE)
    return found


def _ins_name(ins: Ins) -> str:
    return ins.name.lower().replace("_", "-")


# --- (a) the CDDL and the code's types agree -----------------------------------------------------


def test_every_message_class_in_the_source_is_registered():
    """Scanning the source for ``@message("tag")`` finds exactly the registered types, so the
    checks below see every message type the package has."""
    tags = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    if (
                        isinstance(deco, ast.Call)
                        and isinstance(deco.func, ast.Name)
                        and deco.func.id == "message"
                    ):
                        (arg,) = deco.args
                        assert isinstance(arg, ast.Constant)
                        tags.add(arg.value)
    assert tags == set(_code_messages())
    assert len(tags) > 40


@pytest.mark.parametrize("tag", sorted(_code_messages()))
def test_every_message_type_has_a_rule_with_the_same_fields(tag: str):
    cls = _code_messages()[tag]
    assert tag in SPEC.maps, f"the CDDL has no map rule for message {tag}"
    entries = SPEC.maps[tag]
    names = [f.name for f in dataclasses.fields(cls)]
    assert [k for k, _ in entries] == ["t", *names], f"{tag}: fields differ or are out of order"
    types_in_spec = dict(entries)
    assert types_in_spec["t"] == f'"{tag}"'
    hints = _hints(cls)
    # A field declared ``= None`` is left out while None (offpay.wire.codec): the spec marks
    # it ``?`` and gives the type it has when present.
    omissible = {f.name for f in dataclasses.fields(cls) if f.default is None}
    assert SPEC.optional[tag] == omissible, f"{tag}: the ? keys are not the omissible fields"
    for name in names:
        want = expected_type(hints[name])
        if name in omissible:
            want = want.removesuffix(" / nil")
        got = SPEC.resolve(types_in_spec[name])
        text_choice = re.fullmatch(r'"[^"]*"( / "[^"]*")*', got)
        assert got == SPEC.resolve(want) or (want == "tstr" and text_choice), (
            f"{tag}.{name}: code says {want}, CDDL says {types_in_spec[name]}"
        )


def test_the_envelope_rule_is_the_signed_type():
    fields = [f.name for f in dataclasses.fields(Signed)]
    assert [k for k, _ in SPEC.maps["signed"]] == ["t", *fields]
    assert SPEC.resolve(dict(SPEC.maps["signed"])["chain"]) == "[* bstr]"
    assert DOMAIN == b"offpay/1\x00"


def test_every_signed_rule_is_the_envelope_around_one_message():
    messages = _code_messages()
    envelopes = {n for n in SPEC.rules if n.startswith("signed-")}
    for name in envelopes:
        inner = name.removeprefix("signed-")
        assert inner in messages and inner != "signed", name
        assert SPEC.maps[name] == [
            ("t", '"signed"'),
            ("payload", f"bstr .cbor {inner}"),
            ("signature", "bstr"),
            ("chain", "certificate-chain"),
        ], name
    # every Signed[M] field of the code has its envelope rule
    assert {f"signed-{t}" for t in _signed_payloads()} <= envelopes


def test_every_enumeration_has_a_rule_with_the_same_values():
    for name, cls in _enums().items():
        assert SPEC.choices(name) == {m.value for m in cls}, name


def test_amounts_in_the_spec_are_the_money_module_s():
    assert SPEC.choices("currency") == set(CURRENCIES)
    assert SPEC.rules["minor-units"] == f"0..{MAX_MINOR} / negative-minor-units"
    negative = f"(nint .ge -{MAX_MINOR}) .and (int .lt 0)"
    assert SPEC.rules["negative-minor-units"] == negative, "the range must be the money module's"
    assert SPEC.rules["money"] == "[minor: minor-units, currency: currency]"


def test_every_route_and_card_command_has_its_rules():
    for kind in KINDS:
        for part in ("request", "answer"):
            assert f"http.{kind.name}.{part}" in SPEC.rules, f"route {kind.name}: no {part} rule"
    for ins in Ins:
        for part in ("data", "answer"):
            assert f"apdu.{_ins_name(ins)}.{part}" in SPEC.rules, f"{ins.name}: no {part} rule"


def test_the_problem_rule_is_the_problem_body():
    assert [k for k, _ in SPEC.maps["problem"]] == list(Problem.model_fields)
    assert all(t == "tstr" for k, t in SPEC.maps["problem"] if k != "status")
    # a card's refusal is the problem's code and message
    assert [k for k, _ in SPEC.maps["refusal"]] == ["code", "message"]


def test_the_cddl_names_no_type_the_code_lacks():
    allowed = set(SHARED) | set(_code_messages()) | set(_enums())
    allowed |= {f"signed-{tag}" for tag in _code_messages()}
    allowed |= {f"http.{k.name}.{p}" for k in KINDS for p in ("request", "answer")}
    allowed |= {f"apdu.{_ins_name(i)}.{p}" for i in Ins for p in ("data", "answer")}
    unknown = set(SPEC.rules) - allowed
    assert not unknown, f"the CDDL names what the code lacks: {sorted(unknown)}"
    # and every name a rule refers to is defined, or CDDL's own
    prelude = {"tstr", "bstr", "int", "uint", "nint", "bool", "nil"} | {
        "cbor",
        "size",
        "ge",
        "lt",
        "and",
    }
    for name, body in SPEC.rules.items():
        bare = re.sub(r"[\w-]+:", "", re.sub(r'"[^"]*"', "", body))  # no literals, no labels
        for ref in re.findall(r"[a-z][a-z0-9.-]*", bare):
            assert ref in SPEC.rules or ref in prelude, f"{name} refers to undefined {ref}"


def test_the_shipped_cddl_compiles_with_the_validator():
    for rule in ("signed", "offline-payment", "token", "refusal"):
        VALIDATORS.schema(rule)


@given(
    minor=st.one_of(
        st.integers(), st.sampled_from([MAX_MINOR, MAX_MINOR + 1, -MAX_MINOR, -MAX_MINOR - 1])
    ),
    currency=st.one_of(st.sampled_from(sorted(CURRENCIES)), st.text(max_size=4)),
)
def test_the_spec_accepts_exactly_the_amounts_the_money_module_accepts(minor: int, currency: str):
    try:
        Money(minor, currency)
        valid = True
    except MoneyError:
        valid = False
    data = cbor2.dumps([minor, currency])
    if valid:
        VALIDATORS.check("money", data)
    else:
        with pytest.raises(pycddl.ValidationError):
            VALIDATORS.check("money", data)


@given(
    names=st.lists(st.text(max_size=40), min_size=3, max_size=3),
    request_id=st.binary(max_size=32),
    challenge=st.binary(max_size=32),
    minor=st.integers(0, MAX_MINOR),
    currency=st.sampled_from(sorted(CURRENCIES)),
)
def test_any_payment_request_the_codec_writes_validates(
    names: list[str], request_id: bytes, challenge: bytes, minor: int, currency: str
):
    sender, receiver, institution = names
    request = PaymentRequest(
        sender, receiver, institution, request_id, challenge, Money(minor, currency)
    )
    data = encode(request)
    VALIDATORS.check("payment-request", data)
    assert decode(data, PaymentRequest) == request


# --- (b) real traffic validates ------------------------------------------------------------------


@dataclass(frozen=True)
class Apdu:
    """A command and the card's response; ``whole`` marks a chained response put together."""

    command: Command
    response: Response
    whole: bool = False

    @property
    def name(self) -> str:
        return _ins_name(Ins(self.command.ins))

    @property
    def partial(self) -> bool:
        """A piece of a chained response: 61xx, or the last piece answering GET RESPONSE."""
        return not self.whole and (
            self.response.sw & 0xFF00 == SW.MORE_DATA or self.command.ins == Ins.GET_RESPONSE
        )


@dataclass
class Traffic:
    """What crossed each hop while the flows ran."""

    http: list[tuple[str, bytes, bytes | None, str | None]] = field(default_factory=list)
    apdus: list[Apdu] = field(default_factory=list)
    offline: list[tuple[str, bytes]] = field(default_factory=list)  # (rule, bytes)


def _capture_http(traffic: Traffic) -> Callable[..., bytes]:
    def hook(to: str, kind: str, data: bytes, deliver: Callable[[bytes], bytes]) -> bytes:
        try:
            answer = deliver(data)
        except OffpayError as exc:
            traffic.http.append((kind, data, None, exc.code))
            raise
        traffic.http.append((kind, data, answer, None))
        return answer

    return hook


def _capture_apdus(traffic: Traffic, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command a card processes and its response; a chained response (61xx, then GET
    RESPONSE until 9000) is also put together and recorded against the command that began it."""
    real = Card.process
    chains: dict[int, tuple[Command, bytes]] = {}

    def process(self: Card, raw: bytes) -> bytes:
        out = real(self, raw)
        cmd, rsp = Command.from_bytes(raw), Response.from_bytes(out)
        traffic.apdus.append(Apdu(cmd, rsp))
        more = rsp.sw & 0xFF00 == SW.MORE_DATA
        if cmd.ins == Ins.GET_RESPONSE and id(self) in chains:
            first, body = chains.pop(id(self))
            if more:
                chains[id(self)] = (first, body + rsp.data)
            else:
                traffic.apdus.append(Apdu(first, Response(body + rsp.data, rsp.sw), whole=True))
        elif more:
            chains[id(self)] = (cmd, rsp.data)
        return out

    monkeypatch.setattr(Card, "process", process)


def _p2p(net: OfflineNetwork, payer: User, payee: User, minor: int) -> bytes:
    request = payee.phone.ask(payer.phone.show_identity(), net.money(minor))
    payment = payer.phone.pay(payer.pin, request)
    payee.phone.accept(payee.pin, payment)
    return payment


# What devices seal to their intermediary (offpay.wire.sealed_upload), as the intermediary opens it.
OPENED_RULES = {
    "card-session": "signed-card-session",
    "liabilities-proof": "signed-card-session",
    "card-confirmation": "signed-card-confirmation",
    "terminal-upload": "signed-terminal-upload",
    "token-deposit": "signed-deposit-request",
}


def _capture_opened(traffic: Traffic, net: OfflineNetwork) -> Callable[..., bytes]:
    def hook(to: str, kind: str, data: bytes, deliver: Callable[[bytes], bytes]) -> bytes:
        bank = net.banks.get(to)
        if bank is not None and kind in OPENED_RULES:
            with contextlib.suppress(OffpayError):
                traffic.offline.append((OPENED_RULES[kind], bank.intake.open(data)))
        return deliver(data)

    return hook


def _balance_flows(traffic: Traffic, liquidity: Liquidity) -> None:
    """Top-up, a shop charge, a lost payment resubmitted, person-to-person payments across
    intermediaries, a declined request that was paid (a refund), a wrong PIN, syncs of cards
    and terminal (batches), defund, and a lost card blocked and revoked."""
    net = OfflineNetwork(
        liquidity=liquidity, pool=1_000 * SEK if liquidity is Liquidity.POOL else 0
    )
    net.network.hooks.append(_capture_http(traffic))
    net.network.hooks.append(_capture_opened(traffic, net))
    for bank in net.banks:
        net.issue(bank, 1_000_000 * SEK)
    alice = net.add_user("Alice", "bank-a", online=1_000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    shop = net.add_merchant("Shop", "bank-b")
    alice.phone.top_up(alice.pin, net.money(200 * SEK))
    _p2p(net, alice, bob, 80 * SEK)
    to_bob = card_copy(alice)  # in clear, as the card keeps it (the relay carried it sealed)
    _p2p(net, bob, charlie, 50 * SEK)  # Bob spends what he received: a shortfall to cover
    shop.pos.charge(alice.card.process, alice.pin, net.money(10 * SEK))
    shop.pos.charge(charlie.card.process, charlie.pin, net.money(5 * SEK))
    shop.pos.resubmit(charlie.card.process)  # the same payment again: GET LAST PAYMENT
    request = bob.phone.ask(alice.phone.show_identity(), net.money(5 * SEK))
    paid = alice.phone.pay(alice.pin, request)
    bob.phone.decline(request)
    with pytest.raises(OffpayError):
        bob.phone.accept(bob.pin, paid)  # declined: the payment goes back to Alice
    with pytest.raises(OffpayError):
        alice.phone.pay("9999", bob.phone.ask(alice.phone.show_identity(), net.money(1)))
    for user in (charlie, bob, alice):
        user.phone.sync(user.pin)
    shop.pos.sync()
    alice.phone.defund(alice.pin, net.money(10 * SEK))
    for user in (charlie, bob, alice):
        user.phone.sync(user.pin)
    net.banks["bank-a"].block_device(charlie.card_id, "reported lost")
    # A dispute: the central bank asks bank-a for the evidence of Alice's payment to Bob.
    tx = payload_of(Signed.from_bytes(to_bob), OfflinePayment).tx_id
    ask_disclosure(net.central, net.network.send, net.banks["bank-a"].pseudonym(tx), "dispute")


class MergesAnything(TokenElement):
    """SIMULATED HARDWARE BREAK: an element that merges tokens whose joint history shows a
    double spend (an honest one refuses), so that a deposit makes the intermediary report it."""

    def _check_joint_history(self, parents: list[Token]) -> None:
        pass


def _opened_by(r: ReceiverSession, data: bytes) -> bytes:
    """A sealed offer or transfer as the receiving element opens it."""
    assert r.peer is not None
    return open_token_message(data, r.peer.id, r.element.element_id, r.session, r.seal_key)


def _transfer_offline(traffic: Traffic, sender: TokenUser, receiver: TokenUser, minor: int) -> None:
    """FEDS 2025-105 Figure 7 between two phones, each message recorded with its rule."""
    amount = Money(minor, "SEK")
    s, r = SenderSession(sender.element, amount), ReceiverSession(receiver.element, amount)
    sent = traffic.offline.append
    r_hello, s_hello = r.hello(), s.hello()
    sent(("token-hello", r_hello))
    sent(("token-hello", s_hello))
    s_proof, r_proof = s.on_hello(r_hello), r.on_hello(s_hello)
    sent(("signed-token-discovery-proof", s_proof))
    sent(("signed-token-discovery-proof", r_proof))
    s.on_proof(r_proof)
    r.on_proof(s_proof)
    s.users_agree(r.code)
    r.users_agree(s.code)
    offer = s.offer()
    sent(("token-offer-sent", offer))
    sent(("signed-token-offer", _opened_by(r, offer)))  # what the receiving element reads
    address = r.on_offer(offer)
    sent(("signed-token-address-reply", address))
    transfer = s.on_address(address)
    sent(("token-transfer-sent", transfer))
    sent(("signed-token-transfer", _opened_by(r, transfer)))
    confirmation = r.on_transfer(transfer)
    sent(("signed-token-confirmation", confirmation))
    s.on_confirmation(confirmation)


def _token_flows(traffic: Traffic) -> None:
    """Withdraw, pay offline (with change), deposit, renew, sync; then a broken element spends one
    token twice and the merged branches are deposited: the intermediary reports the double
    spend to the central bank."""
    net = OfflineNetwork()
    net.network.hooks.append(_capture_http(traffic))
    net.network.hooks.append(_capture_opened(traffic, net))
    for bank in net.banks:
        net.issue(bank, 1_000_000 * SEK)
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    ann.app.withdraw(net.money(100 * SEK))
    _transfer_offline(traffic, ann, ben, 30 * SEK)  # a split: change for Ann
    ben.app.deposit(net.money(30 * SEK))
    ann.app.deposit(net.money(70 * SEK))
    ben.app.sync()  # an online moment that moves no money
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    root = mal.app.withdraw(net.money(100 * SEK))
    break_sign_once(mal.element)
    _transfer_offline(traffic, mal, ben, 100 * SEK)
    mal.element.store(root)  # the broken element kept the key: it spends the token again
    _transfer_offline(traffic, mal, ben, 100 * SEK)
    first, second = (t.id for t in ben.element.tokens())
    ben.element.__class__ = MergesAnything
    ben.element.merge([first, second])
    ben.element.__class__ = TokenElement
    with pytest.raises(OffpayError) as refused:
        ben.app.deposit(net.money(200 * SEK))
    assert refused.value.code == "token.double_spend"


def _liabilities_flow(traffic: Traffic) -> None:
    """Issue 18: an intermediary publishes its liabilities commitment (asking the central bank
    for its holdings) and a customer's phone fetches and checks its inclusion proof."""
    net = OfflineNetwork()
    net.network.hooks.append(_capture_http(traffic))
    net.issue("bank-a", 1_000 * SEK)
    fay = net.add_user("Fay", "bank-a", online=100 * SEK)
    net.add_user("Gus", "bank-a", online=10 * SEK)  # a sibling in Fay's proof
    fay.phone.top_up(fay.pin, net.money(40 * SEK))
    publish(net.banks["bank-a"])
    fay.phone.check_liabilities(fay.pin, net.central.trust, fay.customer_id)


@pytest.fixture(scope="module")
def traffic() -> Iterator[Traffic]:
    captured = Traffic()
    with pytest.MonkeyPatch.context() as patch:
        _capture_apdus(captured, patch)
        for liquidity in (Liquidity.QUEUE, Liquidity.POOL, Liquidity.RECEIPTS):
            _balance_flows(captured, liquidity)
        _token_flows(captured)
        _liabilities_flow(captured)
        # Responses longer than one APDU arrive in pieces (61xx, GET RESPONSE): shrink the
        # card's response size so that a short flow shows the chaining.
        patch.setattr(card_module, "MAX_RESPONSE", 200)
        net = OfflineNetwork()
        net.issue("bank-a", 1_000 * SEK)
        dan = net.add_user("Dan", "bank-a", online=100 * SEK)
        eve = net.add_user("Eve", "bank-a")
        dan.phone.top_up(dan.pin, net.money(50 * SEK))
        _p2p(net, dan, eve, 20 * SEK)
    yield captured


def test_flows_cross_every_route_and_card_command(traffic: Traffic):
    assert {kind for kind, *_ in traffic.http} == {k.name for k in KINDS}
    assert {Ins(a.command.ins) for a in traffic.apdus} == set(Ins)


def test_every_http_body_validates_against_its_route_s_rules(traffic: Traffic):
    for kind, request, answer, refused in traffic.http:
        VALIDATORS.check(f"http.{kind}.request", request)
        if answer is not None:
            VALIDATORS.check(f"http.{kind}.answer", answer)
        else:
            assert refused  # a typed refusal; over HTTP its body is the refusal rule


def test_a_batch_carries_each_payment_as_the_canonical_bytes_of_its_envelope(traffic: Traffic):
    """Issue 15: ``debit-batch`` and ``credit-batch`` carry payments as byte strings, each the
    deterministic encoding of a ``signed-offline-payment`` (the bytes the device uploaded)."""
    seen = 0
    for kind, request, _, _ in traffic.http:
        if kind not in ("debit-batch", "credit-batch"):
            continue
        body = cbor2.loads(cbor2.loads(request)["payload"])
        assert body["payments"] and all(isinstance(p, bytes) for p in body["payments"])
        for data in body["payments"]:
            VALIDATORS.check("signed-offline-payment", data)
            assert encode(Signed.from_bytes(data)) == data
            seen += 1
    assert seen > 0, "no batch crossed between intermediaries"


def test_every_apdu_validates_against_its_command_s_rules(traffic: Traffic):
    answers = refusals = chained = 0
    for apdu in traffic.apdus:
        VALIDATORS.check(f"apdu.{apdu.name}.data", apdu.command.data)
        sw, data = apdu.response.sw, apdu.response.data
        if apdu.partial:
            VALIDATORS.check("apdu.get-response.answer", data)
        elif sw == SW.OK:
            VALIDATORS.check(f"apdu.{apdu.name}.answer", data)
            answers += 1
            chained += apdu.whole
        else:
            VALIDATORS.check("refusal", data)  # the card's typed refusal, canonical CBOR
            assert cbor2.dumps(cbor2.loads(data), canonical=True) == data
            refusals += 1
    assert answers > 100 and refusals and chained


def test_every_offline_message_validates(traffic: Traffic):
    assert {rule for rule, _ in traffic.offline} - set(OPENED_RULES.values()) == {
        "token-hello",
        "signed-token-discovery-proof",
        "token-offer-sent",
        "signed-token-offer",
        "signed-token-address-reply",
        "token-transfer-sent",
        "signed-token-transfer",
        "signed-token-confirmation",
    }
    for rule, data in traffic.offline:
        VALIDATORS.check(rule, data)


def test_http_refusal_bodies_validate():
    """The JSON problem body, as the services answer it, read as the CDDL's refusal rule."""
    for error in (
        Refused("nothing to do", code="bank.refused"),
        EncodingError("not canonical CBOR"),
        OffpayError("the database is busy; retry", code="service.busy"),
    ):
        status, body = problem_of(error)
        assert 400 <= status < 600
        VALIDATORS.check("problem", cbor2.dumps(json.loads(body)))


@contextlib.contextmanager
def _served(network: NetworkConfig, name: str) -> Iterator[httpx.AsyncClient]:
    """One party of a network behind its real HTTP application."""
    built = build(network, name, retry_every=-1)
    try:
        transport = httpx.ASGITransport(app=create_app(built.service))
        yield httpx.AsyncClient(transport=transport, base_url=f"http://{name}")
    finally:
        built.service.party.db.dispose()
        for held in built.held:
            if hasattr(held, "close"):
                held.close()


async def _check_routes(central: httpx.AsyncClient, bank: httpx.AsyncClient) -> None:
    async with central, bank:
        for client, kinds in ((central, CENTRAL_KINDS), (bank, BANK_KINDS + TOKEN_KINDS)):
            paths = (await client.get("/openapi.json")).json()["paths"]
            routes = {p.removeprefix("/v1/messages/"): v for p, v in paths.items()}
            served = {k.name for k in kinds if f"/v1/messages/{k.name}" in paths}
            assert served == {k.name for k in kinds}
            for kind in served:
                body = routes[kind]["post"]["requestBody"]["content"]
                assert set(body) == {"application/cbor"}, kind
        answer = await central.post("/v1/messages/revocation-list", content=b"")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/cbor"
        VALIDATORS.check("http.revocation-list.answer", answer.content)
        for content_type, status in (("application/cbor", 400), ("application/json", 415)):
            refused = await bank.post(
                "/v1/messages/card-session",
                content=b"\xa0",
                headers={"Content-Type": content_type, "Idempotency-Key": f"k-{status}"},
            )
            assert refused.status_code == status
            assert refused.headers["content-type"] == "application/problem+json"
            VALIDATORS.check("problem", cbor2.dumps(refused.json()))


def test_the_services_routes_and_bodies_are_the_spec_s(tmp_path: Path):
    """Over each service's real HTTP application: its message routes are the spec's, take and
    answer application/cbor, and refuse with the refusal rule as JSON."""
    network = init_network(tmp_path, ("bank-a",))
    with _served(network, CENTRAL) as central, _served(network, "bank-a") as bank:
        anyio.run(_check_routes, central, bank)


def _cbor_bodies(traffic: Traffic) -> Iterator[bytes]:
    """Every body that the spec says is CBOR (not raw bytes), as it crossed its hop."""
    for kind, request, answer, _ in traffic.http:
        yield from (
            body
            for body, part in ((request, "request"), (answer, "answer"))
            if body is not None and not VALIDATORS.is_raw(f"http.{kind}.{part}")
        )
    for apdu in traffic.apdus:
        if not VALIDATORS.is_raw(f"apdu.{apdu.name}.data"):
            yield apdu.command.data
        answered = not apdu.partial and apdu.response.sw == SW.OK
        if answered and not VALIDATORS.is_raw(f"apdu.{apdu.name}.answer"):
            yield apdu.response.data
    for _, data in traffic.offline:
        yield data


def _deterministic(obj: Any) -> None:
    """RFC 8949 §4.2.1: map keys sorted by their encodings; no floats, tags, or other types."""
    if isinstance(obj, dict):
        keys = list(obj)
        assert keys == sorted(keys, key=cbor2.dumps), keys
        for value in obj.values():
            _deterministic(value)
    elif isinstance(obj, list):
        for value in obj:
            _deterministic(value)
    else:
        assert type(obj) in (str, bytes, int, bool, type(None)), type(obj)


def _messages_in(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        yield obj
        if obj.get("t") == "signed":
            yield from _messages_in(cbor2.loads(obj["payload"]))
        for value in obj.values():
            yield from _messages_in(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _messages_in(value)


def _verify(chain: list[bytes], signature: bytes, data: bytes) -> None:
    """The envelope's signature, checked with the cryptography library alone."""
    key = x509.load_der_x509_certificate(chain[0]).public_key()
    if isinstance(key, ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey):
        key.verify(signature, data)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        raise AssertionError(f"unexpected key {type(key).__name__}")


def test_every_body_is_deterministic_cbor_signed_over_the_domain(traffic: Traffic):
    envelopes = 0
    for data in _cbor_bodies(traffic):
        obj = cbor2.loads(data)
        _deterministic(obj)
        assert cbor2.dumps(obj) == data  # shortest integers and lengths, definite lengths
        for msg in _messages_in(obj):
            if msg.get("t") == "signed":
                inner = cbor2.loads(msg["payload"])
                _deterministic(inner)
                assert cbor2.dumps(inner) == msg["payload"]
                _verify(msg["chain"], msg["signature"], b"offpay/1\x00" + msg["payload"])
                with pytest.raises(InvalidSignature):
                    _verify(msg["chain"], msg["signature"], msg["payload"])  # domain required
                envelopes += 1
    assert envelopes > 500


def test_a_payment_s_id_is_derived_as_the_spec_says(traffic: Traffic):
    """docs/wire.md: tx_id = SHA-256("offpay-tx" 0x00 payer 0x00 decimal counter)[:16]."""
    checked = 0
    for kind, request, answer, _ in traffic.http:
        if kind != "debit-request" or answer is None:
            continue
        debit = cbor2.loads(cbor2.loads(request)["payload"])
        payment = cbor2.loads(debit["payment"]["payload"])
        result = cbor2.loads(cbor2.loads(answer)["payload"])
        text = f"offpay-tx\x00{payment['sender']}\x00{payment['payer_seq']}".encode()
        assert result["tx_id"] == hashlib.sha256(text).digest()[:16]
        checked += 1
    assert checked


# --- (c) a mutated encoding is refused -----------------------------------------------------------


def _samples(traffic: Traffic) -> dict[str, dict[str, Any]]:
    """One captured instance of each message type, as its decoded map."""
    found: dict[str, dict[str, Any]] = {}
    for data in _cbor_bodies(traffic):
        for msg in _messages_in(cbor2.loads(data)):
            tag = msg.get("t")
            if isinstance(tag, str) and tag != "signed":
                found.setdefault(tag, msg)
    return found


def _mutations(msg: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, value in msg.items():
        if name == "t":
            continue
        yield f"without {name}", {k: v for k, v in msg.items() if k != name}
        wrong = 7 if isinstance(value, str) else "wrong"
        yield f"{name} of the wrong type", {**msg, name: wrong}
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
            yield f"{name} as a float", {**msg, name: [float(value[0]) + 0.5, value[1]]}
            yield f"{name} in an unknown currency", {**msg, name: [value[0], "XXX"]}
    yield "an extra key", {**msg, "extra": 1}
    yield "another tag", {**msg, "t": "card-status" if msg["t"] != "card-status" else "token"}


def test_mutated_encodings_are_refused_by_the_spec_and_by_the_decoder(traffic: Traffic):
    samples = _samples(traffic)
    # every message type that crosses a hop was seen (the sealed terminal record does not)
    assert set(_code_messages()) - set(samples) == {"signed", "terminal-record"}
    messages = _code_messages()
    cases = 0
    for tag, msg in sorted(samples.items()):
        good = cbor2.dumps(msg, canonical=True)
        VALIDATORS.check(tag, good)
        decode(good, messages[tag])
        omissible = {f.name for f in dataclasses.fields(messages[tag]) if f.default is None}
        for what, bad in _mutations(msg):
            data = cbor2.dumps(bad, canonical=True)
            if what.removeprefix("without ") in omissible:  # absent means None: both accept
                VALIDATORS.check(tag, data)
                decode(data, messages[tag])
                continue
            with pytest.raises(pycddl.ValidationError):
                VALIDATORS.check(tag, data)
                pytest.fail(f"the CDDL accepts {tag} {what}")
            with pytest.raises(OffpayError):
                decode(data, messages[tag])
                pytest.fail(f"the decoder accepts {tag} {what}")
            cases += 1
    assert cases > 300


def test_a_tampered_message_inside_an_envelope_is_refused(traffic: Traffic):
    """The validator follows ``.cbor`` into a signed payload, and into envelopes nested in it."""
    # the upload as the intermediary opens it (the PoS app carries it sealed)
    request = next(d for r, d in traffic.offline if r == "signed-terminal-upload")
    envelope = cbor2.loads(request)
    upload = cbor2.loads(envelope["payload"])
    assert upload["payments"], "the sample upload must carry a payment"
    payment_envelope = upload["payments"][0]
    payment = cbor2.loads(payment_envelope["payload"])
    for bad_payment in ({**payment, "payer_seq": "1"}, {**payment, "amount": [1.5, "SEK"]}):
        nested = {**payment_envelope, "payload": cbor2.dumps(bad_payment, canonical=True)}
        bad_upload = {**upload, "payments": [nested]}
        data = cbor2.dumps(
            {**envelope, "payload": cbor2.dumps(bad_upload, canonical=True)}, canonical=True
        )
        with pytest.raises(pycddl.ValidationError):
            VALIDATORS.check("http.terminal-upload.request", data)
    VALIDATORS.check("http.terminal-upload.request", request)
    with pytest.raises(pycddl.ValidationError):
        VALIDATORS.check("http.terminal-upload.request", b"\xa0")  # an empty map
    with pytest.raises(pycddl.ValidationError):
        VALIDATORS.check("apdu.verify-pin.data", b"12")  # a PIN of two digits


def test_the_envelope_answers_for_its_payload_type(traffic: Traffic):
    """An answer of the wrong kind (an instruction where a receipt is due) is refused."""
    instruction = next(a for k, _, a, _ in traffic.http if k == "card-session" and a)
    with pytest.raises(pycddl.ValidationError):
        VALIDATORS.check("http.debit-request.answer", instruction)
    VALIDATORS.check("http.card-session.answer", instruction)
    assert Signed.from_bytes(instruction).chain


# --- docs/wire.md shows the shipped CDDL, and its tables and example agree with the code -------

DOC = (SRC.parents[1] / "docs" / "wire.md").read_text(encoding="utf-8")


def test_the_doc_shows_every_rule_of_the_shipped_cddl_as_it_is():
    shown: dict[str, str] = {}
    for block in re.findall(r"```cddl\n(.*?)```", DOC, re.S):
        for rule in cddlparser.parse(block).rules:
            assert rule.name.name not in shown, f"{rule.name.name} is shown twice"
            shown[rule.name.name] = _text(rule.type)
    assert shown == SPEC.rules


def test_the_doc_s_route_table_is_the_spec_s():
    rows = re.findall(r"^\| `([a-z-]+)` \| [^|]+ \| `([\w.-]+)` \| `([\w.-]+)` \|$", DOC, re.M)
    assert {kind for kind, _, _ in rows} == {k.name for k in KINDS}
    for kind, request, answer in rows:
        assert SPEC.rules[f"http.{kind}.request"] == request, kind
        assert SPEC.rules[f"http.{kind}.answer"] == answer, kind


def test_the_doc_s_command_table_is_the_card_s(traffic: Traffic):
    sent = {
        Ins(a.command.ins): a.command.cla
        for a in traffic.apdus
        if a.response.sw != SW.INS_NOT_SUPPORTED
    }
    rows = re.findall(
        r"^\| ([A-Z ]+) \| `([0-9A-F]{2})` \| `([0-9A-F]{2})` \| `([\w.-]+)` \| `([\w.-]+)` \|$",
        DOC,
        re.M,
    )
    assert len(rows) == len(Ins)
    for title, cla, ins_hex, data, answer in rows:
        ins = Ins[title.replace(" ", "_")]
        assert int(ins_hex, 16) == ins, title
        assert int(cla, 16) == sent[ins], f"{title}: the card was sent CLA {sent[ins]:02X}"
        assert SPEC.rules[f"apdu.{_ins_name(ins)}.data"] == data, title
        assert SPEC.rules[f"apdu.{_ins_name(ins)}.answer"] == answer, title


def test_the_doc_s_worked_example_is_the_codec_s_encoding():
    shown = re.search(r"is these 72 bytes:\n\n```\n(.*?)```", DOC, re.S)
    assert shown is not None
    data = encode(SessionStart("bank-a/engine", Operation.TOP_UP, Money(5000, "SEK")))
    assert bytes.fromhex(shown.group(1)) == data and len(data) == 72
    VALIDATORS.check("apdu.begin-online.data", data)
    assert DOMAIN.hex(" ") in DOC
