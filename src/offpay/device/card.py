"""The card applet: the payer's and recipient's offline wallet (report §3.4–3.7).

A sans-IO state machine: :meth:`Card.process` takes a command APDU and returns a response APDU;
nothing else reaches in. Every handler computes a new immutable :class:`CardState` from the
old one and only then replaces it, so a refused command leaves the card exactly as it was.
The sole deliberate exception is a wrong PIN, which must cost a try.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from offpay.crypto.keys import Algorithm, Signer, public_key_bytes
from offpay.crypto.pki import PAYEE_ROLES, Credential, Role, TrustStore, load_certificate
from offpay.crypto.revocation import newer_revocations
from offpay.device.apdu import (
    CLA_ISO,
    CLA_PROPRIETARY,
    MAX_RESPONSE,
    SW,
    Command,
    Ins,
    Response,
)
from offpay.device.apdu import error_response as _error_response
from offpay.device.image import DeviceImage
from offpay.device.memory import SealedMemory, evolve
from offpay.errors import (
    CertificateError,
    DeviceStateError,
    InsufficientFunds,
    LimitExceeded,
    OffpayError,
    PinError,
    ReplayError,
    SignatureError,
)
from offpay.money import Money
from offpay.policy import accept_policy, check_payment_max
from offpay.spending import Spending
from offpay.wire.codec import decode, encode
from offpay.wire.enciphered_pin import EncipheredPin, PinChallenge, decipher_pin
from offpay.wire.envelope import Signed, is_issued, open_signed, payload_of, sign
from offpay.wire.messages import (
    MAX_DECLINED,
    CardConfirmation,
    CardIdentity,
    CardInstruction,
    CardSession,
    CardStatus,
    Direction,
    LimitsPolicy,
    Liquidity,
    LogEntry,
    OfflinePayment,
    Operation,
    PaymentAsk,
    PaymentRequest,
    Personalisation,
    SessionStart,
)
from offpay.wire.sealed_payment import new_seal_key, open_payment, seal_payment
from offpay.wire.sealed_upload import IntakeKey, accept_intake_key, seal_to_intermediary

PIN_TRIES = 3
MAX_OPEN_REQUESTS = 4
NONCE_BYTES = 16
# Funding receipts ride inside the payment, which must still fit one extended command APDU to
# the payee's card with room to spare: with ML-DSA keys that is about one receipt.
RECEIPT_BYTES_BUDGET = 32 * 1024

Random = Callable[[int], bytes]


def pin_digest(card_id: str, pin: str) -> bytes:
    """What the card stores instead of the PIN, salted with the card's id."""
    return hashlib.sha256(f"offpay-pin\x00{card_id}\x00{pin}".encode()).digest()


def key_fingerprint(signer_or_key: object) -> str:
    key = signer_or_key.public_key if isinstance(signer_or_key, Signer) else signer_or_key
    return hashlib.sha256(public_key_bytes(key)).hexdigest()[:32]  # type: ignore[arg-type]


@dataclass(frozen=True)
class OpenRequest:
    request_id: bytes
    payer: str
    amount: Money
    # What identifies the signed request (Signed.digest): the payment must carry exactly the
    # request this card signed, which it checks against this instead of verifying its own
    # signature again.
    digest: bytes = b""
    seal_key: bytes | None = None  # X25519 private key the payment is sealed to


@dataclass(frozen=True)
class OpenSession:
    nonce: bytes
    receiver: str
    operation: Operation
    amount: Money
    declared: tuple[bytes, ...] = ()  # the declined requests the session declares


@dataclass(frozen=True)
class CardState:
    card_id: str
    institution: str
    chain: tuple[bytes, ...]
    pin_digest: bytes
    pin_tries_left: int
    balance: Money
    seq: int  # never resets: every change of money or log moves it on
    instruction_no: int  # the last intermediary instruction applied
    log: tuple[LogEntry, ...]  # offline transactions since the last sync
    # What the log's incoming payments add up to, kept as the log changes: every payment
    # checks it, and reading it from the log meant decoding each received payment again.
    received_offline: Money
    policy: LimitsPolicy
    open_requests: tuple[OpenRequest, ...]
    session: OpenSession | None
    last_payment: Signed[OfflinePayment] | None
    revoked: frozenset[str] = frozenset()  # devices the network's revocation list names
    revocation_version: int = 0
    last_instruction: Signed[CardInstruction] | None = None  # proves the card's history
    session_no: int = 0  # sessions opened so far
    declined: tuple[bytes, ...] = ()  # requests this card declined since its last sync
    # The card's clock (Unix seconds; see docs/limits.md): the intermediary's signed time at the
    # last sync, moved forward only by the payees' signed times; never backwards offline.
    clock: int | None = None
    synced_at: int | None = None  # the intermediary's signed time at the last sync
    spent_offline: int = 0  # minor units paid in the log's outgoing payments
    day: int | None = None  # the UTC day (clock // 86400) the day's counters are for
    day_payments: int = 0
    day_spent: int = 0  # minor units
    # The intermediary's key the card seals its sessions and confirmations to
    # (offpay.wire.sealed_upload); None for a card personalised before sealing.
    intake_key: IntakeKey | None = None

    @property
    def offline_transactions(self) -> int:
        """The offline counter of the report: entries waiting for sync; sync resets it."""
        return len(self.log)


@dataclass(frozen=True)
class Transient:
    """What a card keeps in RAM, as ISO 7816 cards keep their security status: it is lost at
    every reset (the card pulled out, a power cut), so a PIN entered for one payment is never
    left standing for whoever holds the card next, and it costs no write of sealed memory."""

    pin_verified: bool = False
    challenge: bytes | None = None  # the payee's request must answer it (one payment)
    # The PIN challenge and the X25519 key the PIN is enciphered to: one VERIFY, then gone.
    pin_challenge: tuple[bytes, bytes] | None = None


def _received_in(log: tuple[LogEntry, ...], currency: str) -> Money:
    """The incoming payments of ``log`` added up."""
    total = Money.zero(currency)
    for entry in log:
        if entry.direction is Direction.IN:
            total = total + decode(entry.payment.payload, OfflinePayment).amount
    return total


def _spent_in(log: tuple[LogEntry, ...]) -> int:
    """The outgoing payments of ``log`` added up, in minor units."""
    return sum(
        decode(e.payment.payload, OfflinePayment).amount.minor
        for e in log
        if e.direction is Direction.OUT
    )


def spending(state: CardState) -> Spending:
    """The card's clock and counters as the shared rule of :mod:`offpay.spending` reads them."""
    return Spending(
        state.clock,
        state.synced_at,
        state.spent_offline,
        state.day,
        state.day_payments,
        state.day_spent,
    )


def today(state: CardState, payee_time: int | None) -> Spending:
    """The card's clock after a payee's signed time (never moved backwards) and its day's
    counters. A clock corrected back by a sync keeps the counters of the later day."""
    return spending(state).at(payee_time)


def check_payment_limits(state: CardState, amount: Money, now: Spending) -> None:
    """The limits a paying card enforces beyond count, balance and liquidity (docs/limits.md);
    each refusal names its limit. The rule is the token element's too (offpay.spending)."""
    now.check(state.policy, amount)


def receipt_count(signed: Signed[OfflinePayment]) -> int:
    """A receipt and every receipt nested in it: what the policy's ``max_receipts`` bounds."""
    return 1 + sum(receipt_count(r) for r in decode(signed.payload, OfflinePayment).funding)


def funding_receipts(state: CardState) -> tuple[Signed[OfflinePayment], ...]:
    """Policy ``receipts``: the payments this card received since its last sync (each with
    what funded it), newest first until the policy's count or the byte budget is reached, then
    in the order they happened, so that settling them in turn follows causal order."""
    chosen: list[Signed[OfflinePayment]] = []
    count = size = 0
    for entry in reversed(state.log):
        if entry.direction is not Direction.IN:
            continue
        n, b = receipt_count(entry.payment), len(entry.payment.to_bytes())
        if count + n > state.policy.max_receipts or size + b > RECEIPT_BYTES_BUDGET:
            break
        chosen.append(entry.payment)
        count, size = count + n, size + b
    return tuple(reversed(chosen))


class Card:
    """A secure element running the offpay applet. Its private key never leaves it."""

    def __init__(self, signer: Signer, random: Random = os.urandom) -> None:
        self._signer = signer
        self._random = random
        self._trust: TrustStore | None = None
        self.memory = SealedMemory(key_fingerprint(signer), random)
        self._pending_response = b""
        self._ram = Transient()

    @property
    def _state(self) -> CardState | None:
        """The card's state, read from its sealed memory (anti-rollback)."""
        return self.memory.read()  # type: ignore[no-any-return]

    @_state.setter
    def _state(self, state: CardState) -> None:
        self.memory.write(state)

    @classmethod
    def manufacture(
        cls, algorithm: Algorithm = Algorithm.ED25519, random: Random = os.urandom
    ) -> Card:
        """A blank card that generated its own key pair."""
        return cls(Signer.generate(algorithm), random)

    def image(self) -> DeviceImage:
        """The card switched off (``offpay`` keeps it between commands)."""
        root = self._trust.root_der if self._trust is not None else None
        return DeviceImage(self._signer, self.memory.image(), root)

    @classmethod
    def from_image(cls, image: DeviceImage, random: Random = os.urandom) -> Card:
        """The same card switched on again: RAM empty, sealed memory as it was left."""
        card = cls(image.signer, random)
        card.memory = SealedMemory.restore(key_fingerprint(image.signer), image.memory, random)
        if image.root is not None:
            card._trust = TrustStore(image.root)
        return card

    def reset(self) -> None:
        """The card is powered up again (pulled out and put back, or a power cut): what it
        held in RAM is gone; its sealed memory is untouched."""
        self._ram = Transient()
        self._pending_response = b""

    # -- the only entry point -----------------------------------------------------------------

    def process(self, raw: bytes) -> bytes:
        try:
            cmd = Command.from_bytes(raw)
        except OffpayError as exc:
            return Response(_error_response(exc).data, SW.WRONG_LENGTH).to_bytes()
        if (cmd.cla, cmd.ins) == (CLA_ISO, Ins.GET_RESPONSE):
            return self._next_chunk()
        self._pending_response = b""  # any other command abandons an unread response
        handler = self._handlers.get((cmd.cla, cmd.ins))
        if handler is None:
            known_cla = cmd.cla in (CLA_ISO, CLA_PROPRIETARY)
            sw = SW.INS_NOT_SUPPORTED if known_cla else SW.CLA_NOT_SUPPORTED
            return Response(b"", sw).to_bytes()
        try:
            data = handler(cmd)
        except OffpayError as exc:
            return _error_response(exc).to_bytes()
        self._pending_response = data
        return self._next_chunk()

    def _next_chunk(self) -> bytes:
        """ISO 7816-4 response chaining: a response longer than one APDU (a log of ML-DSA
        signed payments can be) comes in pieces, each ending 61xx until the last."""
        chunk = self._pending_response[:MAX_RESPONSE]
        self._pending_response = self._pending_response[MAX_RESPONSE:]
        left = len(self._pending_response)
        if not left:
            return Response(chunk, SW.OK).to_bytes()
        return Response(chunk, SW.MORE_DATA | (left if left < 256 else 0)).to_bytes()

    @functools.cached_property
    def _handlers(self) -> dict[tuple[int, int], Callable[[Command], bytes]]:
        p = CLA_PROPRIETARY
        return {
            (CLA_ISO, Ins.VERIFY_PIN): self._verify_pin,
            (CLA_ISO, Ins.GET_CHALLENGE): self._get_pin_challenge,
            (p, Ins.GET_PUBLIC_KEY): self._get_public_key,
            (p, Ins.PERSONALISE): self._personalise,
            (p, Ins.GET_IDENTITY): self._get_identity,
            (p, Ins.GET_STATUS): self._get_status,
            (p, Ins.PAY): self._pay,
            (p, Ins.GET_LAST_PAYMENT): self._get_last_payment,
            (p, Ins.REQUEST_PAYMENT): self._request_payment,
            (p, Ins.RECEIVE): self._receive,
            (p, Ins.DECLINE_REQUEST): self._decline_request,
            (p, Ins.BEGIN_ONLINE): self._begin_online,
            (p, Ins.APPLY_INSTRUCTION): self._apply_instruction,
        }

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _credential(self) -> Credential:
        return Credential(self._signer, self._live().chain)

    def _live(self) -> CardState:
        if self._state is None or self._trust is None:
            raise DeviceStateError("card is not personalised", code="device.blank")
        return self._state

    def _trusted(self) -> TrustStore:
        state = self._live()
        assert self._trust is not None
        if self._trust.revoked != state.revoked:
            self._trust.revoked = set(state.revoked)  # refuse revoked devices offline
        return self._trust

    def _pin_ok(self, state: CardState) -> None:
        if state.pin_tries_left <= 0:
            raise PinError("PIN is blocked after too many wrong tries", code="pin.blocked")
        if not self._ram.pin_verified:
            raise PinError("enter the PIN first", code="pin.required")

    @staticmethod
    def _sealed_for(key: IntakeKey | None, receiver: str, data: bytes) -> bytes:
        """``data`` for its intermediary's eyes only: the phone app carries it
        (docs/privacy.md). In clear for a card that holds no key of ``receiver``'s."""
        return seal_to_intermediary(
            data, key if key is not None and key.sender == receiver else None
        )

    def _amount(self, state: CardState, amount: Money) -> None:
        if amount.currency != state.policy.currency:
            raise DeviceStateError(
                f"card holds {state.policy.currency}, not {amount.currency}",
                code="device.wrong_currency",
            )
        if amount.minor <= 0:
            raise DeviceStateError("amount must be positive", code="device.bad_amount")

    # -- commands -----------------------------------------------------------------------------

    def _get_public_key(self, cmd: Command) -> bytes:
        return public_key_bytes(self._signer.public_key)

    def _personalise(self, cmd: Command) -> bytes:
        if self._state is not None:
            raise DeviceStateError("card is already personalised", code="device.personalised")
        signed = decode(cmd.data, Signed)
        perso = decode(signed.payload, Personalisation)
        trust = TrustStore(perso.root)
        msg, _ = open_signed(
            signed,
            Personalisation,
            trust,
            Role.ENGINE,
            receiver=key_fingerprint(self._signer),
            institution=perso.institution,
        )
        ident = trust.expect(msg.chain, Role.CARD, institution=msg.institution)
        if ident.id != msg.card:
            raise CertificateError("the certificate names another card")
        if public_key_bytes(load_certificate(msg.chain[0]).public_key()) != public_key_bytes(  # type: ignore[arg-type]
            self._signer.public_key
        ):
            raise CertificateError("the certificate is not for this card's key")
        policy = accept_policy(msg.policy, trust, msg.institution, None)
        intake = (
            None
            if msg.intake_key is None
            else accept_intake_key(msg.intake_key, trust, msg.institution, None)
        )
        self._trust = trust
        self._state = CardState(
            card_id=msg.card,
            institution=msg.institution,
            chain=msg.chain,
            pin_digest=msg.pin_digest,
            pin_tries_left=PIN_TRIES,
            balance=Money.zero(policy.currency),
            seq=0,
            instruction_no=0,
            log=(),
            received_offline=Money.zero(policy.currency),
            policy=policy,
            open_requests=(),
            session=None,
            last_payment=None,
            intake_key=intake,
        )
        return b""

    def _get_pin_challenge(self, cmd: Command) -> bytes:
        """A fresh challenge and a fresh key to encipher the PIN to, signed by the card so that
        no relay can swap the key (offpay.wire.enciphered_pin). Kept in RAM for one VERIFY."""
        state = self._live()
        challenge = self._random(NONCE_BYTES)
        private, public = new_seal_key(self._random)
        signed = sign(PinChallenge(state.card_id, challenge, public), self._credential)
        self._ram = replace(self._ram, pin_challenge=(challenge, private))
        return signed.to_bytes()

    def _verify_pin(self, cmd: Command) -> bytes:
        """VERIFY with the PIN enciphered to the card's current PIN challenge: the PIN never
        crosses a relay in clear. The challenge answers one VERIFY; a replayed one is refused
        before a try is spent, as is one that does not open."""
        state = self._live()
        if state.pin_tries_left <= 0:
            raise PinError("PIN is blocked after too many wrong tries", code="pin.blocked")
        enciphered = decode(cmd.data, EncipheredPin)
        held = self._ram.pin_challenge
        self._ram = replace(self._ram, pin_challenge=None, pin_verified=False)
        if held is None or not hmac.compare_digest(enciphered.challenge, held[0]):
            raise ReplayError("the enciphered PIN answers no challenge this card holds")
        pin = decipher_pin(enciphered, state.card_id, held[1])
        if hmac.compare_digest(pin_digest(state.card_id, pin), state.pin_digest):
            if state.pin_tries_left != PIN_TRIES:  # the tries are sealed; the flag is in RAM
                self._state = evolve(state, pin_tries_left=PIN_TRIES)
            self._ram = replace(self._ram, pin_verified=True)
            return b""
        left = state.pin_tries_left - 1
        self._ram = replace(self._ram, pin_verified=False)
        self._state = evolve(state, pin_tries_left=left)
        if left == 0:
            raise PinError("wrong PIN; the PIN is now blocked", code="pin.blocked")
        raise PinError(f"wrong PIN; {left} tries left", tries_left=left)

    def _get_identity(self, cmd: Command) -> bytes:
        state = self._live()
        challenge = self._random(NONCE_BYTES)
        self._ram = replace(self._ram, challenge=challenge)
        return encode(CardIdentity(state.card_id, state.institution, state.chain, challenge))

    def _get_status(self, cmd: Command) -> bytes:
        s = self._live()
        return encode(
            CardStatus(
                card=s.card_id,
                institution=s.institution,
                balance=s.balance,
                seq=s.seq,
                offline_transactions=s.offline_transactions,
                policy_version=s.policy.version,
                pin_tries_left=s.pin_tries_left,
            )
        )

    def _pay(self, cmd: Command) -> bytes:
        """Report §3.5 step 4 and §3.6 step 3: verify the payee's signed request, debit, sign."""
        state = self._live()
        signed_request = decode(cmd.data, Signed)
        request, payee = open_signed(
            signed_request,
            PaymentRequest,
            self._trusted(),
            PAYEE_ROLES,
            receiver=state.card_id,
        )
        if payee.institution != request.payee_institution:
            raise CertificateError("request names another institution than its signer's")
        challenge = self._ram.challenge
        if challenge is None or not hmac.compare_digest(request.challenge, challenge):
            raise ReplayError("payment request does not answer this card's current challenge")
        self._pin_ok(state)
        self._amount(state, request.amount)
        if state.card_id in state.revoked:
            raise DeviceStateError("this card is revoked", code="device.revoked")
        policy = state.policy
        if state.offline_transactions + 1 > policy.card_max_offline_transactions:
            raise LimitExceeded(
                "card_max_offline_transactions",
                f"the card may hold {policy.card_max_offline_transactions} offline transactions "
                "before it synchronises; synchronise it to pay again",
            )
        if request.amount > state.balance:
            raise InsufficientFunds(f"card balance {state.balance} does not cover {request.amount}")
        received = state.received_offline
        if policy.liquidity is Liquidity.RESTRICT and request.amount > state.balance - received:
            raise LimitExceeded(
                "card_received_not_spendable",
                "money received offline cannot be spent offline before the card synchronises",
            )
        now = today(state, request.payee_time)
        check_payment_limits(state, request.amount, now)
        after = now.paid(request.amount)
        seq = state.seq + 1
        payment = OfflinePayment(
            sender=state.card_id,
            receiver=request.sender,
            payer_institution=state.institution,
            payee_institution=request.payee_institution,
            payer_seq=seq,
            amount=request.amount,
            request=signed_request,
            payer_received=received,
            funding=funding_receipts(state) if policy.liquidity is Liquidity.RECEIPTS else (),
        )
        signed = sign(payment, self._credential)
        self._state = evolve(
            state,
            balance=state.balance - request.amount,
            seq=seq,
            log=(*state.log, LogEntry(seq, Direction.OUT, signed)),
            last_payment=signed,
            clock=after.clock,
            spent_offline=after.spent_offline,
            day=after.day,
            day_payments=after.day_payments,
            day_spent=after.day_spent,
        )
        self._ram = Transient()  # the challenge is answered, the PIN used
        return seal_payment(signed, request)  # for the payee's eyes only (docs/privacy.md)

    def _get_last_payment(self, cmd: Command) -> bytes:
        """Report §3.5: resubmit the last payment; no new transaction, no new debit."""
        state = self._live()
        if state.last_payment is None:
            raise DeviceStateError("this card has made no payment", code="device.no_payment")
        last = state.last_payment
        return seal_payment(
            last, payload_of(payload_of(last, OfflinePayment).request, PaymentRequest)
        )

    def _request_payment(self, cmd: Command) -> bytes:
        """Report §3.6 step 1: the recipient's card signs a request to one payer card."""
        state = self._live()
        ask = decode(cmd.data, PaymentAsk)
        payer = self._trusted().expect(ask.payer.chain, Role.CARD)
        if payer.id != ask.payer.card or payer.institution != ask.payer.institution:
            raise CertificateError("payer identity does not match its certificate")
        if payer.id == state.card_id:
            raise DeviceStateError("a card cannot pay itself", code="device.self_payment")
        self._amount(state, ask.amount)
        policy = state.policy
        check_payment_max(policy, ask.amount)
        # The oldest open request lapses if the queue is full; the others count against the
        # limits, so that a payment answering an open request is never refused for a limit.
        pending = state.open_requests[-(MAX_OPEN_REQUESTS - 1) :]
        lapsed = tuple(r.request_id for r in state.open_requests[: -(MAX_OPEN_REQUESTS - 1)])
        if len(state.open_requests) + len(state.declined) >= MAX_DECLINED:
            raise DeviceStateError(
                "too many declined payment requests; synchronise the card first",
                code="device.busy",
            )
        expected = state.balance
        for r in pending:
            expected = expected + r.amount
        if expected + ask.amount > policy.card_max_balance:
            raise LimitExceeded(
                "card_max_balance",
                f"receiving {ask.amount} could take the card above its limit of "
                f"{policy.card_max_balance}",
            )
        if state.offline_transactions + len(pending) + 1 > policy.card_max_offline_transactions:
            raise LimitExceeded(
                "card_max_offline_transactions",
                f"the card may hold {policy.card_max_offline_transactions} offline transactions "
                "before it synchronises, counting the payments it has asked for",
            )
        request_id = self._random(NONCE_BYTES)
        seal_key, seal_to = new_seal_key(self._random)
        request = PaymentRequest(
            sender=state.card_id,
            receiver=payer.id,
            payee_institution=state.institution,
            request_id=request_id,
            challenge=ask.payer.challenge,
            amount=ask.amount,
            payee_time=state.clock,
            seal_to=seal_to,
        )
        signed = sign(request, self._credential)
        # A bounded queue: the oldest open request lapses when a new one would overflow it,
        # and is declined: a payment answering it is refused here and goes back to its payer.
        opened = (
            *pending,
            OpenRequest(request_id, payer.id, ask.amount, signed.digest, seal_key),
        )
        self._state = evolve(state, open_requests=opened, declined=(*state.declined, *lapsed))
        return signed.to_bytes()

    def _receive(self, cmd: Command) -> bytes:
        """Report §3.6 step 5: verify the payer's signature and that the payment carries this
        card's own open request, exactly as it signed it; credit, log."""
        state = self._live()
        trust = self._trusted()
        keys = {r.request_id: r.seal_key for r in state.open_requests}
        opened = open_payment(cmd.data, state.card_id, keys.get, state.declined)
        signed = decode(opened, Signed)
        payment, _ = open_signed(signed, OfflinePayment, trust, Role.CARD, receiver=state.card_id)
        # The request is this card's own: the payment must carry exactly one it signed and
        # holds open, byte for byte, so its own signature is not verified a second time and
        # its payload is decoded only to say why a payment is refused.
        own = next(
            (r for r in state.open_requests if is_issued(payment.request, r.digest, state.chain)),
            None,
        )
        if own is None:
            request = payload_of(payment.request, PaymentRequest)
            if request.sender != state.card_id:
                raise CertificateError("the payment answers a request this card did not sign")
            if request.request_id in state.declined:
                raise DeviceStateError(
                    "this card declined that request: the payment goes back to its payer when "
                    "both cards have synchronised",
                    code="device.declined",
                )
            if any(r.request_id == request.request_id for r in state.open_requests):
                raise SignatureError("the payment carries an altered copy of this card's request")
            raise ReplayError("no open request for this payment; it was received or cancelled")
        if payment.amount != own.amount or own.payer != payment.sender:
            raise DeviceStateError("payment does not match the request", code="device.mismatch")
        trust.verify_chain(payment.request.chain)  # this card's own, unless it is revoked
        if payment.payee_institution != state.institution:
            raise DeviceStateError("payment names another institution", code="device.mismatch")
        self._pin_ok(state)
        policy = state.policy
        check_payment_max(policy, payment.amount)
        if state.balance + payment.amount > policy.card_max_balance:
            raise LimitExceeded(
                "card_max_balance", f"the card balance may not exceed {policy.card_max_balance}"
            )
        if state.offline_transactions + 1 > policy.card_max_offline_transactions:
            raise LimitExceeded(
                "card_max_offline_transactions",
                f"the card may hold {policy.card_max_offline_transactions} offline transactions",
            )
        seq = state.seq + 1
        self._state = evolve(
            state,
            balance=state.balance + payment.amount,
            seq=seq,
            log=(*state.log, LogEntry(seq, Direction.IN, signed)),
            received_offline=state.received_offline + payment.amount,
            open_requests=tuple(r for r in state.open_requests if r is not own),
        )
        self._ram = replace(self._ram, pin_verified=False)
        return self._get_status(cmd)

    def _decline_request(self, cmd: Command) -> bytes:
        """The holder refuses a payment the card asked for, or gives up waiting for it: the
        card refuses the payment from now on and declares the decline at its next sync. No PIN:
        declining moves no money."""
        state = self._live()
        if not any(r.request_id == cmd.data for r in state.open_requests):
            raise DeviceStateError(
                "no open request with that id (received, or declined already)",
                code="device.no_request",
            )
        self._state = evolve(
            state,
            open_requests=tuple(r for r in state.open_requests if r.request_id != cmd.data),
            declined=(*state.declined, cmd.data),
        )
        return b""

    def _begin_online(self, cmd: Command) -> bytes:
        """Report §3.4 and §3.7 step 2: after the PIN, sign the card's state and log for the
        intermediary, with a fresh nonce that the answer must echo."""
        state = self._live()
        start = decode(cmd.data, SessionStart)
        if start.operation is Operation.SYNC:
            if start.amount.minor != 0:
                raise DeviceStateError("a sync moves no amount", code="device.bad_amount")
        else:
            self._amount(state, start.amount)
        self._pin_ok(state)
        nonce = self._random(NONCE_BYTES)
        # A request does not outlive the card's sync: one still open is declined now.
        declined = (*state.declined, *(r.request_id for r in state.open_requests))
        session = CardSession(
            sender=state.card_id,
            receiver=start.receiver,
            nonce=nonce,
            seq=state.seq,
            balance=state.balance,
            instruction_no=state.instruction_no,
            policy_version=state.policy.version,
            revocation_version=state.revocation_version,
            session_no=state.session_no + 1,
            operation=start.operation,
            amount=start.amount,
            log=state.log,
            last_instruction=state.last_instruction,
            declined=declined,
            intake_version=None if state.intake_key is None else state.intake_key.version,
        )
        signed = sign(session, self._credential)
        self._state = evolve(
            state,
            open_requests=(),
            declined=declined,
            session=OpenSession(nonce, start.receiver, start.operation, start.amount, declined),
            session_no=state.session_no + 1,
        )
        self._ram = replace(self._ram, pin_verified=False)
        return self._sealed_for(state.intake_key, start.receiver, signed.to_bytes())

    def _apply_instruction(self, cmd: Command) -> bytes:
        """Report §3.4 step 8 and §3.7 step 7, with what §3.8 found missing: the instruction
        is signed by the card's own intermediary, addressed to this card, answers the open
        session and carries the next instruction number, so it cannot be replayed."""
        state = self._live()
        trust = self._trusted()
        signed_instruction = decode(cmd.data, Signed)
        instr, engine = open_signed(
            signed_instruction,
            CardInstruction,
            trust,
            Role.ENGINE,
            receiver=state.card_id,
            institution=state.institution,
        )
        session = state.session
        if session is None or not hmac.compare_digest(instr.nonce, session.nonce):
            raise ReplayError("instruction does not answer this card's open session")
        if engine.id != session.receiver:
            raise ReplayError("instruction comes from another party than the session's")
        if instr.instruction_no != state.instruction_no + 1:
            raise ReplayError(
                f"instruction {instr.instruction_no} is not the next one "
                f"(last applied {state.instruction_no})"
            )
        if instr.expected_seq != state.seq:
            raise DeviceStateError(
                "the card changed since the session began; start the session again",
                code="device.stale_instruction",
            )
        if not (0 <= instr.clear_through_seq <= state.seq):
            raise DeviceStateError("instruction clears an unknown part of the log")
        policy = state.policy
        if instr.policy is not None:
            policy = accept_policy(instr.policy, trust, state.institution, policy)
        revoked, revocation_version = state.revoked, state.revocation_version
        listing = newer_revocations(instr.revocations, trust, revocation_version)
        if listing is not None:
            revoked, revocation_version = frozenset(listing.devices), listing.version
        intake = state.intake_key
        if instr.intake_key is not None:
            intake = accept_intake_key(instr.intake_key, trust, state.institution, intake)
        if instr.balance.currency != policy.currency or instr.balance.minor < 0:
            raise DeviceStateError("instruction balance is invalid", code="device.bad_amount")
        if instr.balance > policy.card_max_balance:
            raise LimitExceeded(
                "card_max_balance", f"the card balance may not exceed {policy.card_max_balance}"
            )
        seq = state.seq + 1
        log = tuple(e for e in state.log if e.seq > instr.clear_through_seq)
        # the intermediary's time wins over any payee's
        synced = spending(state).synced(instr.engine_time, _spent_in(log))
        self._state = evolve(
            state,
            balance=instr.balance,
            seq=seq,
            instruction_no=instr.instruction_no,
            log=log,
            received_offline=_received_in(log, state.balance.currency),
            policy=policy,
            session=None,
            open_requests=(),
            # Declared in this session: the intermediary has them. Requests opened since the
            # session began lapse now and are declined, to be declared at the next one.
            declined=(
                *(d for d in state.declined if d not in session.declared),
                *(r.request_id for r in state.open_requests),
            ),
            revoked=revoked,
            revocation_version=revocation_version,
            last_instruction=signed_instruction,
            clock=synced.clock,
            synced_at=synced.synced_at,
            spent_offline=synced.spent_offline,
            day=synced.day,
            intake_key=intake,
        )
        self._ram = replace(self._ram, challenge=None)
        confirmation = CardConfirmation(
            sender=state.card_id,
            receiver=engine.id,
            instruction_no=instr.instruction_no,
            nonce=instr.nonce,
            seq=seq,
            balance=instr.balance,
        )
        return self._sealed_for(intake, engine.id, sign(confirmation, self._credential).to_bytes())

    # -- read-only views for tests and the simulator ------------------------------------------

    @property
    def state(self) -> CardState:
        return self._live()

    @property
    def transient(self) -> Transient:
        return self._ram

    @property
    def is_personalised(self) -> bool:
        return self._state is not None
