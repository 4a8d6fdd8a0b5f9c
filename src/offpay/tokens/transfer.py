"""The offline token transfer protocol in the paper's three phases (FEDS 2025-105, Figure 7).

1. Discovery: each element proves, by signing both nonces with its issuer-endorsed element key,
   that it is a genuine secure element; both derive the same 6-digit code, which the two users
   compare, so a relay in the middle (which would have to substitute a nonce) is noticed.
2. Token verification: the sender offers the candidate token; the receiver verifies its whole
   history and answers with a fresh address from its own, discovered element.
3. Transfer: the sender's element signs once to that address; the receiver verifies and
   stores the new token and answers with a confirmation code the sender checks.

Both roles are sans-IO state machines: bytes in, bytes out; the phones only carry them.
The offer and the transfer carry the token's whole history, which only the receiving element
needs: they cross the phones sealed to a key of the receiver's (offpay.tokens.sealing).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from offpay.crypto.pki import Identity, Role
from offpay.errors import DeviceStateError, ReplayError, TokenError
from offpay.money import Money
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Address, Token
from offpay.tokens.sealing import SessionSealKey, open_token_message, seal_token_message
from offpay.wire.codec import Message, decode, encode, message
from offpay.wire.envelope import open_signed, sign

NONCE_BYTES = 16


@message("token-hello")
class Hello(Message):
    """The element's certificate and a commitment to its nonce: the nonce itself is revealed
    only after the peer committed to its own, so a relay in the middle cannot choose nonces
    that give both users the same code."""

    element: str
    chain: tuple[bytes, ...]
    commitment: bytes


@message("token-discovery-proof")
class DiscoveryProof(Message):
    """Signed by the element: its nonce, revealed, bound to both commitments."""

    sender: str
    receiver: str
    nonce: bytes
    commitments: bytes
    # The element's clock (Unix seconds, TokenElement.clock): the counterparty's clock for the
    # peer, signed by this element; the payer's time limits read it (docs/limits.md).
    clock: int | None = None
    # The receiving element's fresh X25519 key for this session (offpay.tokens.sealing): the
    # sender seals its offer and transfer, which carry the token's history, to it.
    seal_to: bytes | None = None


@message("token-offer")
class Offer(Message):
    sender: str
    receiver: str
    session: bytes
    token: Token


@message("token-address-reply")
class AddressReply(Message):
    sender: str
    receiver: str
    session: bytes
    address: Address


@message("token-transfer")
class Transfer(Message):
    sender: str
    receiver: str
    session: bytes
    token: Token


@message("token-confirmation")
class Confirmation(Message):
    sender: str
    receiver: str
    session: bytes
    code: str


def six_digits(*parts: bytes) -> str:
    digest = hashlib.sha256(b"offpay-token-code\x00" + b"\x00".join(parts)).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"


class _Party:
    """What both roles share: the discovery phase."""

    is_sender = False

    def __init__(
        self, element: TokenElement, random: bytes | None = None, now: int | None = None
    ) -> None:
        """``now``: the phone's time (Unix seconds), given to the element (tell_time)."""
        self.element = element
        element.tell_time(now)
        self.peer_clock: int | None = None  # the counterparty's clock, signed by its element
        self.nonce = random if random is not None else os.urandom(NONCE_BYTES)
        self.peer: Identity | None = None
        self.peer_commitment = b""
        self.session = b""
        self.code = ""  # the 6-digit code this party's user reads and compares
        self.peer_proved = False
        self.users_agreed = False
        self.peer_seal_to: bytes | None = None  # the receiver's session key, for the sender
        # the receiver's own key for this session: made in the element, gone with the session
        self.seal_key = None if self.is_sender else SessionSealKey(element.random)

    def _commit(self, nonce: bytes, element: str) -> bytes:
        return hashlib.sha256(
            b"offpay-token-commit\x00" + element.encode() + b"\x00" + nonce
        ).digest()

    def hello(self) -> bytes:
        mine = self._commit(self.nonce, self.element.element_id)
        return encode(Hello(self.element.element_id, self.element.chain, mine))

    def _both(self, mine: bytes, theirs: bytes) -> tuple[bytes, bytes]:
        """Both parties order pairs the same way: the sender's first."""
        return (mine, theirs) if self.is_sender else (theirs, mine)

    def on_hello(self, data: bytes) -> bytes:
        """Phase 1: learn the peer's element and commitment; reveal our nonce, signed by our
        element (the challenge-response that proves an issuer-endorsed element)."""
        peer = decode(data, Hello)
        ident = self.element.trust.expect(peer.chain, Role.ELEMENT)
        if ident.id != peer.element:
            raise TokenError("hello names another element than its certificate")
        if ident.id == self.element.element_id:
            raise TokenError("an element cannot pay itself", code="token.self_transfer")
        self.peer, self.peer_commitment = ident, peer.commitment
        mine = self._commit(self.nonce, self.element.element_id)
        binding = hashlib.sha256(b"".join(self._both(mine, peer.commitment))).digest()
        proof = DiscoveryProof(
            self.element.element_id,
            ident.id,
            self.nonce,
            binding,
            self.element.clock,
            None if self.seal_key is None else self.seal_key.public,
        )
        return sign(proof, self.element.credential).to_bytes()

    def on_proof(self, data: bytes) -> None:
        """Phase 1: the peer's element revealed the nonce it committed to and signed both
        commitments; now both sides derive the session and the code their users compare."""
        peer = self._peer()
        proof, ident = open_signed(
            data, DiscoveryProof, self.element.trust, Role.ELEMENT, receiver=self.element.element_id
        )
        mine = self._commit(self.nonce, self.element.element_id)
        binding = hashlib.sha256(b"".join(self._both(mine, self.peer_commitment))).digest()
        if (
            ident.id != peer.id
            or self._commit(proof.nonce, peer.id) != self.peer_commitment
            or not hmac.compare_digest(proof.commitments, binding)
        ):
            raise ReplayError("discovery proof does not match the peer's commitment")
        first, second = self._both(self.nonce, proof.nonce)
        self.session = hashlib.sha256(b"offpay-token-session\x00" + first + second).digest()
        ids = sorted([ident.id.encode(), self.element.element_id.encode()])
        self.code = six_digits(first, second, *ids)
        self.peer_clock = proof.clock
        self.peer_seal_to = proof.seal_to
        self.peer_proved = True

    def _peer(self) -> Identity:
        if self.peer is None:
            raise DeviceStateError("discovery has not happened", code="device.state")
        if self.peer.id in self.element.trust.revoked:
            raise TokenError(f"{self.peer.id} is revoked", code="token.revoked")
        return self.peer

    def users_agree(self, code_on_the_other_phone: str) -> None:
        """The user compared the two phones' codes and confirmed they match (the paper's
        user-in-the-loop step); nothing moves before that."""
        if not self.peer_proved or not hmac.compare_digest(code_on_the_other_phone, self.code):
            raise TokenError("the users' codes differ", code="token.code_mismatch")
        self.users_agreed = True

    def _ready(self) -> Identity:
        peer = self._peer()
        if not self.peer_proved:
            raise DeviceStateError("the peer has not proved its element", code="device.state")
        if not self.users_agreed:
            raise DeviceStateError("the users have not confirmed the codes", code="device.state")
        return peer

    def _open(self, data: bytes, cls: type, peer: Identity):  # type: ignore[no-untyped-def]
        data = open_token_message(
            data, peer.id, self.element.element_id, self.session, self.seal_key
        )
        msg, ident = open_signed(
            data, cls, self.element.trust, Role.ELEMENT, receiver=self.element.element_id
        )
        if ident.id != peer.id or not hmac.compare_digest(msg.session, self.session):
            raise ReplayError("message is not from this session's peer")
        return msg


class SenderSession(_Party):
    is_sender = True

    def __init__(
        self,
        element: TokenElement,
        amount: Money,
        random: bytes | None = None,
        now: int | None = None,
    ) -> None:
        super().__init__(element, random, now)
        self.amount = amount
        self.offered: Token | None = None
        self.sent: Token | None = None
        self.confirmed = False

    def offer(self) -> bytes:
        """Phase 2: a token worth exactly the amount (split or merged as needed), if the
        element's limits allow the payment at the receiver's signed time."""
        peer = self._ready()
        self.element.check_payment(self.amount, self.peer_clock)
        self.offered = self.element.select(self.amount)
        msg = Offer(self.element.element_id, peer.id, self.session, self.offered)
        return self._sealed(sign(msg, self.element.credential).to_bytes(), peer)

    def on_address(self, data: bytes) -> bytes:
        """Phase 3: SignOnce the offered token to the receiver's fresh address."""
        peer = self._ready()
        reply: AddressReply = self._open(data, AddressReply, peer)
        if self.offered is None or self.sent is not None:
            raise DeviceStateError("no offer is waiting for an address", code="device.state")
        if reply.address.endorsement.element != peer.id:
            raise TokenError("the address belongs to another element than the one discovered")
        # the limits again, as the element signs: another session may have paid meanwhile
        self.sent = self.element.pay(self.offered.id, reply.address, self.peer_clock)
        return self.resend()

    def resend(self) -> bytes:
        """The signed transfer again (for a cut connection): no second SignOnce is possible or
        needed, the token is already the receiver's."""
        peer = self._ready()
        if self.sent is None:
            raise DeviceStateError("nothing was sent", code="device.state")
        msg = Transfer(self.element.element_id, peer.id, self.session, self.sent)
        return self._sealed(sign(msg, self.element.credential).to_bytes(), peer)

    def _sealed(self, signed: bytes, peer: Identity) -> bytes:
        """``signed`` sealed to the key the receiver put in its signed discovery proof."""
        return seal_token_message(
            signed, self.element.element_id, peer.id, self.session, self.peer_seal_to
        )

    def on_confirmation(self, data: bytes) -> None:
        peer = self._ready()
        conf: Confirmation = self._open(data, Confirmation, peer)
        if self.sent is None or conf.code != six_digits(self.session, self.sent.digest):
            raise TokenError(
                "the receiver's confirmation code does not match", code="token.unconfirmed"
            )
        self.confirmed = True


class ReceiverSession(_Party):
    def __init__(
        self,
        element: TokenElement,
        amount: Money,
        random: bytes | None = None,
        now: int | None = None,
    ) -> None:
        super().__init__(element, random, now)
        self.amount = amount
        self.offered: Token | None = None
        self.address: Address | None = None
        self.received: Token | None = None

    def on_offer(self, data: bytes) -> bytes:
        """Phase 2: verify the candidate token's whole history, then give a fresh address."""
        peer = self._ready()
        offer: Offer = self._open(data, Offer, peer)
        if offer.token.value != self.amount:
            raise TokenError(
                f"offered {offer.token.value}, expected {self.amount}", code="token.wrong_amount"
            )
        if offer.token.endorsement.element != peer.id:
            raise TokenError("the offered token is not owned through the sender's element")
        self.element.check_offer(offer.token)  # its history and the limits, before an address
        self.offered = offer.token
        self.address = self.element.keygen()
        msg = AddressReply(self.element.element_id, peer.id, self.session, self.address)
        return sign(msg, self.element.credential).to_bytes()

    def on_transfer(self, data: bytes) -> bytes:
        """Phase 3: the token is ours if it is the offered one, signed over to our address."""
        peer = self._ready()
        transfer: Transfer = self._open(data, Transfer, peer)
        token = transfer.token
        if self.offered is None or self.address is None:
            raise DeviceStateError("no offer was accepted", code="device.state")
        if self.received is not None:
            if token == self.received:
                return self._confirm(peer, token)  # a resent transfer: confirm again
            raise ReplayError("this session already received a token")
        if (
            token.address != self.address
            or tuple(a.id for a in token.ancestors) != (self.offered.id,)
            or token.value != self.offered.value
        ):
            raise TokenError("the transferred token is not the offered one", code="token.mismatch")
        self.element.store(token)
        self.received = token
        return self._confirm(peer, token)

    def _confirm(self, peer: Identity, token: Token) -> bytes:
        code = six_digits(self.session, token.digest)
        msg = Confirmation(self.element.element_id, peer.id, self.session, code)
        return sign(msg, self.element.credential).to_bytes()


def transfer_offline(
    sender: TokenElement,
    receiver: TokenElement,
    amount: Money,
    *,
    sender_now: int | None = None,
    receiver_now: int | None = None,
    relay: Callable[[bytes], bytes] = lambda data: data,
) -> Token:
    """Run the whole protocol between two elements (tests, demo); the phones' times, if given,
    go to their elements. ``relay`` carries every message from one phone to the other: by
    default a perfect one; a recorder or an attacker may watch or change what passes."""
    s = SenderSession(sender, amount, now=sender_now)
    r = ReceiverSession(receiver, amount, now=receiver_now)
    s_proof, r_proof = s.on_hello(relay(r.hello())), r.on_hello(relay(s.hello()))
    s.on_proof(relay(r_proof))
    r.on_proof(relay(s_proof))
    s.users_agree(r.code)
    r.users_agree(s.code)
    address = r.on_offer(relay(s.offer()))
    confirmation = r.on_transfer(relay(s.on_address(relay(address))))
    s.on_confirmation(relay(confirmation))
    assert r.received is not None
    return r.received
