"""The shop terminal's secure module (report §3.5, with §3.8's fixes designed in).

The module, not the PoS app, holds the terminal's private key and signs every payment request,
so a manipulated app cannot make it sign anything else. Received payments leave the module only
sealed; at sync the app hands them back and the module checks that none was dropped or altered
before it signs the upload. Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from offpay.crypto.keys import Algorithm, Signer, public_key_bytes
from offpay.crypto.pki import Credential, Role, TrustStore, load_certificate
from offpay.crypto.revocation import newer_revocations
from offpay.crypto.sealing import Sealer
from offpay.device.image import DeviceImage
from offpay.device.memory import SealedMemory, evolve
from offpay.errors import (
    CertificateError,
    DeviceStateError,
    LimitExceeded,
    ReplayError,
    SignatureError,
)
from offpay.money import Money
from offpay.policy import accept_policy, check_payment_max
from offpay.wire.codec import Message, decode, encode, message
from offpay.wire.enciphered_pin import encipher_pin, open_challenge
from offpay.wire.envelope import Signed, is_issued, open_signed, payload_of, sign
from offpay.wire.messages import (
    MAX_DECLINED,
    CardIdentity,
    LimitsPolicy,
    OfflinePayment,
    PaymentRequest,
    TerminalInstruction,
    TerminalUpload,
)
from offpay.wire.sealed_payment import new_seal_key, open_payment
from offpay.wire.sealed_upload import IntakeKey, accept_intake_key, seal_to_intermediary

NONCE_BYTES = 16
MAX_OPEN_REQUESTS = 16

Random = Callable[[int], bytes]


@message("terminal-record")
class ReceivedRecord(Message):
    """A received payment as the module seals it for the app's storage."""

    terminal: str
    seq: int
    payment: Signed[OfflinePayment]


@dataclass(frozen=True)
class Pending:
    request_id: bytes
    card: str
    amount: Money
    # Signed.digest of the request the module signed: a payment must carry exactly that
    # request, checked byte for byte instead of verifying the module's own signature again.
    digest: bytes = b""
    seal_key: bytes | None = None  # X25519 private key the payment is sealed to


@dataclass(frozen=True)
class TerminalState:
    terminal_id: str
    institution: str
    chain: tuple[bytes, ...]
    policy: LimitsPolicy
    seq: int  # payments received over the module's life; never resets
    cleared_through: int  # the last seq the intermediary confirmed as synchronised
    # (seq, amount, tx_id, digest of the signed payment) since the last reset
    unsynced: tuple[tuple[int, Money, bytes, bytes], ...]
    received: Money  # the sum of ``unsynced``, kept as it changes: checked on every request
    open_requests: tuple[Pending, ...]
    instruction_no: int
    session_nonce: bytes | None
    revoked: frozenset[str] = frozenset()  # devices the network's revocation list names
    revocation_version: int = 0
    declined: tuple[bytes, ...] = ()  # request ids declined since the last sync
    declaring: tuple[bytes, ...] = ()  # those the open sync's upload declares
    clock: int | None = None  # the latest time its host gave (Unix seconds); never goes back
    # (seq, request id, sealing key) of the received payments not yet synchronised: a card
    # resubmits its last payment sealed afresh to the same key (offpay.wire.sealed_payment).
    answered_keys: tuple[tuple[int, bytes, bytes], ...] = ()
    # The intermediary's key its uploads are sealed to (offpay.wire.sealed_upload); None for a
    # module certified before sealing, whose uploads go in clear.
    intake_key: IntakeKey | None = None

    @property
    def offline_payments(self) -> int:
        return len(self.unsynced)


def _sum_unsynced(unsynced: tuple[tuple[int, Money, bytes, bytes], ...], currency: str) -> Money:
    total = Money.zero(currency)
    for _, amount, _, _ in unsynced:
        total = total + amount
    return total


def _seal_key_in(state: TerminalState) -> Callable[[bytes], bytes | None]:
    """The sealing key of a request: an open one, or one answered since the last sync (a card
    resubmits its payment to the same key). Looked up, not gathered into a map per payment:
    a terminal holds up to its limit of answered requests."""

    def key_for(request_id: bytes) -> bytes | None:
        for pending in state.open_requests:
            if pending.request_id == request_id:
                return pending.seal_key
        for _, answered, key in reversed(state.answered_keys):
            if answered == request_id:
                return key
        return None

    return key_for


class TerminalModule:
    def __init__(
        self,
        signer: Signer,
        sealer: Sealer,
        random: Random = os.urandom,
    ) -> None:
        self._signer = signer
        self._sealer = sealer
        self._random = random
        self._trust: TrustStore | None = None
        self.memory = SealedMemory(public_key_bytes(signer.public_key).hex(), random)

    @property
    def _state(self) -> TerminalState | None:
        """The module's state, read from its sealed memory (anti-rollback)."""
        return self.memory.read()  # type: ignore[no-any-return]

    @_state.setter
    def _state(self, state: TerminalState) -> None:
        self.memory.write(state)

    @classmethod
    def manufacture(
        cls, algorithm: Algorithm = Algorithm.ED25519, random: Random = os.urandom
    ) -> TerminalModule:
        return cls(Signer.generate(algorithm), Sealer.generate(random(32)), random)

    def image(self) -> DeviceImage:
        """The module switched off (``offpay`` keeps it between commands)."""
        root = self._trust.root_der if self._trust is not None else None
        return DeviceImage(self._signer, self.memory.image(), root, self._sealer.key)

    @classmethod
    def from_image(cls, image: DeviceImage, random: Random = os.urandom) -> TerminalModule:
        """The same module switched on again, its sealed memory as it was left."""
        if image.record_key is None:
            raise DeviceStateError("this image is not a terminal module's", code="device.image")
        module = cls(image.signer, Sealer(image.record_key), random)
        owner = public_key_bytes(image.signer.public_key).hex()
        module.memory = SealedMemory.restore(owner, image.memory, random)
        if image.root is not None:
            module._trust = TrustStore(image.root)
        return module

    @property
    def public_key(self) -> bytes:
        return public_key_bytes(self._signer.public_key)

    def _live(self) -> tuple[TerminalState, TrustStore]:
        if self._state is None or self._trust is None:
            raise DeviceStateError("terminal is not personalised", code="device.blank")
        if self._trust.revoked != self._state.revoked:
            self._trust.revoked = set(self._state.revoked)  # refuse revoked cards offline
        return self._state, self._trust

    @property
    def state(self) -> TerminalState:
        return self._live()[0]

    def personalise(
        self,
        terminal_id: str,
        institution: str,
        root: bytes,
        chain: tuple[bytes, ...],
        policy: Signed[LimitsPolicy],
        intake_key: Signed[IntakeKey] | None = None,
    ) -> None:
        """Load identity, root, first policy and the intermediary's signed intake key in the
        issuer's facility (once)."""
        if self._state is not None:
            raise DeviceStateError("terminal is already personalised", code="device.personalised")
        trust = TrustStore(root)
        ident = trust.expect(chain, Role.TERMINAL, institution=institution)
        cert_key = public_key_bytes(load_certificate(chain[0]).public_key())  # type: ignore[arg-type]
        if ident.id != terminal_id or cert_key != self.public_key:
            raise CertificateError("certificate is not for this terminal's key")
        accepted = accept_policy(policy, trust, institution, None)
        intake = (
            None if intake_key is None else accept_intake_key(intake_key, trust, institution, None)
        )
        self._trust = trust
        self._state = TerminalState(
            terminal_id=terminal_id,
            institution=institution,
            chain=chain,
            policy=accepted,
            seq=0,
            cleared_through=0,
            unsynced=(),
            received=Money.zero(accepted.currency),
            open_requests=(),
            instruction_no=0,
            session_nonce=None,
            intake_key=intake,
        )

    def _check_room(self, state: TerminalState, amount: Money, *, answering: bool) -> None:
        """Limits, counting the requests still open: a card must never pay a request that the
        terminal would then have to refuse (report §3.8 point 4). ``answering``: the payment
        answers one of the open requests, which is already counted."""
        policy = state.policy
        if amount.currency != policy.currency or amount.minor <= 0:
            raise DeviceStateError(
                f"amount must be a positive {policy.currency} amount", code="device.bad_amount"
            )
        committed = state.received
        for pending in state.open_requests:
            committed = committed + pending.amount
        check_payment_max(policy, amount)
        count = state.offline_payments + len(state.open_requests)
        if answering:
            committed, count = committed - amount, count - 1
        if count + 1 > policy.terminal_max_offline_payments:
            raise LimitExceeded(
                "terminal_max_offline_payments",
                f"the terminal may accept {policy.terminal_max_offline_payments} offline payments "
                "before it synchronises",
            )
        if committed + amount > policy.terminal_max_received:
            raise LimitExceeded(
                "terminal_max_received",
                f"the terminal may hold {policy.terminal_max_received} received offline; "
                f"it holds or awaits {committed}",
            )

    def request_payment(self, identity: bytes, amount: Money, now: int | None = None) -> bytes:
        """Report §3.5 step 1, signed by the module as §3.8 asks: a request to pay ``amount``,
        addressed to the card that showed ``identity`` and bound to its challenge. ``now``: the
        host's time (Unix seconds); the module signs the latest time it was given, so a host
        that sets its clock back cannot make the card's offline time shorter."""
        state, trust = self._live()
        if state.terminal_id in state.revoked:
            raise DeviceStateError("this terminal is revoked", code="device.revoked")
        card = decode(identity, CardIdentity)
        ident = trust.expect(card.chain, Role.CARD)
        if ident.id != card.card or ident.institution != card.institution:
            raise CertificateError("card identity does not match its certificate")
        if len(state.open_requests) >= MAX_OPEN_REQUESTS:
            raise DeviceStateError(
                "too many open payment requests; cancel one first", code="device.busy"
            )
        if len(state.open_requests) + len(state.declined) >= MAX_DECLINED:
            raise DeviceStateError(
                "too many declined payment requests; synchronise the terminal first",
                code="device.busy",
            )
        self._check_room(state, amount, answering=False)
        clock = state.clock if now is None or (state.clock or 0) >= now else now
        request_id = self._random(NONCE_BYTES)
        seal_key, seal_to = new_seal_key(self._random)
        request = PaymentRequest(
            sender=state.terminal_id,
            receiver=card.card,
            payee_institution=state.institution,
            request_id=request_id,
            challenge=card.challenge,
            amount=amount,
            payee_time=clock,
            seal_to=seal_to,
        )
        signed = sign(request, Credential(self._signer, state.chain))
        pending = Pending(request_id, card.card, amount, signed.digest, seal_key)
        opened = (*state.open_requests, pending)
        self._state = evolve(state, open_requests=opened, clock=clock)
        return signed.to_bytes()

    def accept_payment(self, data: bytes) -> bytes:
        """Report §3.5 step 6: verify the card's payment against our own open request, then
        hand back the payment sealed for the app to store."""
        state, trust = self._live()
        opened = open_payment(data, state.terminal_id, _seal_key_in(state), state.declined)
        signed = decode(opened, Signed)
        payment, _ = open_signed(
            signed, OfflinePayment, trust, Role.CARD, receiver=state.terminal_id
        )
        # The request is the module's own: the payment must carry exactly one it signed and
        # holds open, byte for byte, so its own signature is not verified a second time and
        # its payload is decoded only to say why a payment is refused.
        own = next(
            (p for p in state.open_requests if is_issued(payment.request, p.digest, state.chain)),
            None,
        )
        request = payload_of(payment.request, PaymentRequest) if own is None else None
        if request is not None and request.sender != state.terminal_id:
            raise CertificateError("the payment answers a request this terminal did not sign")
        tx_id = payment.tx_id
        for seq_taken, _, tx, digest in state.unsynced:
            if tx != tx_id:
                continue
            if digest == signed.digest:
                # The same payment again (a resubmission after its sealed record was lost on the
                # way to the app): hand the record back, sealed afresh; nothing is counted twice.
                again = ReceivedRecord(state.terminal_id, seq_taken, signed)
                return self._sealer.seal(
                    encode(again), self._aad(state, seq_taken), self._random(12)
                )
            raise ReplayError("this payment was already received", code="wire.replay.duplicate")
        if request is not None:
            if request.request_id in state.declined:
                raise DeviceStateError(
                    "this request was declined: the payment goes back to the card when the card "
                    "and this terminal have synchronised",
                    code="device.declined",
                )
            if any(p.request_id == request.request_id for p in state.open_requests):
                raise SignatureError(
                    "the payment carries an altered copy of this terminal's request"
                )
            raise ReplayError("no open request for this payment; it was received or cancelled")
        assert own is not None
        if payment.amount != own.amount or payment.sender != own.card:
            raise DeviceStateError("payment does not match the request", code="device.mismatch")
        trust.verify_chain(payment.request.chain)  # the module's own, unless it is revoked
        if payment.payee_institution != state.institution:
            raise DeviceStateError("payment names another institution", code="device.mismatch")
        self._check_room(state, payment.amount, answering=True)
        seq = state.seq + 1
        record = ReceivedRecord(state.terminal_id, seq, signed)
        sealed = self._sealer.seal(encode(record), self._aad(state, seq), self._random(12))
        self._state = evolve(
            state,
            seq=seq,
            unsynced=(*state.unsynced, (seq, payment.amount, tx_id, signed.digest)),
            answered_keys=state.answered_keys
            + (((seq, own.request_id, own.seal_key),) if own.seal_key else ()),
            received=state.received + payment.amount,
            open_requests=tuple(p for p in state.open_requests if p is not own),
        )
        return sealed

    def cancel_request(self, request_id: bytes) -> None:
        """The shop declines a request: the card refused it, never answered it, or its payment
        never arrived, or the shop refuses to be paid. The module refuses any payment for it
        from now on and declares it at its next sync; should the card have paid it after all,
        the payment goes back to the card (bank/refusal.py)."""
        state, _ = self._live()
        if not any(p.request_id == request_id for p in state.open_requests):
            return  # received already (then it cannot be declined), or declined before
        self._state = evolve(
            state,
            open_requests=tuple(p for p in state.open_requests if p.request_id != request_id),
            declined=(*state.declined, request_id),
        )

    @staticmethod
    def _aad(state: TerminalState, seq: int) -> bytes:
        return f"offpay-terminal\x00{state.terminal_id}\x00{seq}".encode()

    def encipher_pin(self, pin: str, challenge: bytes, card: str | None = None) -> bytes:
        """The shop's secure PIN pad: ``pin`` as the customer typed it, enciphered to the card's
        signed PIN ``challenge`` (checked against the network's root, and that it is ``card``'s
        when given), so that the PoS app relays only ciphertext (offpay.wire.enciphered_pin)."""
        _, trust = self._live()
        return encipher_pin(pin, open_challenge(challenge, trust, card))

    def begin_sync(self, engine_id: str, sealed_records: list[bytes]) -> bytes:
        """Report §3.7 step 2 for the terminal: unseal what the app stored, insist that every
        payment since the last reset is there, and sign them for the intermediary."""
        state, _ = self._live()
        wanted = [seq for seq, _, _, _ in state.unsynced]
        found: dict[int, Signed[OfflinePayment]] = {}
        for sealed in sealed_records:
            for seq in wanted:
                if seq in found:
                    continue
                try:
                    plain = self._sealer.unseal(sealed, self._aad(state, seq))
                except Exception:
                    continue
                record = decode(plain, ReceivedRecord)
                found[seq] = record.payment
                break
        missing = [s for s in wanted if s not in found]
        if missing:
            raise DeviceStateError(
                f"stored payments {missing} are missing or altered", code="device.records_missing"
            )
        nonce = self._random(NONCE_BYTES)
        # A request does not outlive the terminal's sync: one still open is declined now.
        declined = (*state.declined, *(p.request_id for p in state.open_requests))
        upload = TerminalUpload(
            sender=state.terminal_id,
            receiver=engine_id,
            nonce=nonce,
            instruction_no=state.instruction_no,
            policy_version=state.policy.version,
            revocation_version=state.revocation_version,
            first_seq=state.cleared_through + 1,
            payments=tuple(found[s] for s in wanted),
            declined=declined,
            intake_version=None if state.intake_key is None else state.intake_key.version,
        )
        signed = sign(upload, Credential(self._signer, state.chain))
        self._state = evolve(
            state, session_nonce=nonce, open_requests=(), declined=declined, declaring=declined
        )
        # For the intermediary's eyes only: the PoS app carries it (docs/privacy.md).
        key = state.intake_key
        return seal_to_intermediary(
            signed.to_bytes(), key if key is not None and key.sender == engine_id else None
        )

    def apply_instruction(self, data: bytes) -> None:
        """Report §3.7's signed reset message: clear what the intermediary settled."""
        state, trust = self._live()
        instr, _ = open_signed(
            decode(data, Signed),
            TerminalInstruction,
            trust,
            Role.ENGINE,
            receiver=state.terminal_id,
            institution=state.institution,
        )
        if state.session_nonce is None or not hmac.compare_digest(instr.nonce, state.session_nonce):
            raise ReplayError("instruction does not answer this terminal's open sync")
        if instr.instruction_no != state.instruction_no + 1:
            raise ReplayError(f"instruction {instr.instruction_no} is not the next one")
        if not (state.cleared_through <= instr.clear_through_seq <= state.seq):
            raise DeviceStateError("instruction clears an unknown range", code="device.state")
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
        unsynced = tuple(u for u in state.unsynced if u[0] > instr.clear_through_seq)
        self._state = evolve(
            state,
            revoked=revoked,
            revocation_version=revocation_version,
            cleared_through=instr.clear_through_seq,
            unsynced=unsynced,
            answered_keys=tuple(a for a in state.answered_keys if a[0] > instr.clear_through_seq),
            received=_sum_unsynced(unsynced, state.policy.currency),
            instruction_no=instr.instruction_no,
            policy=policy,
            session_nonce=None,
            declined=tuple(d for d in state.declined if d not in state.declaring),
            declaring=(),
            intake_key=intake,
        )
