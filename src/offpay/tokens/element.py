"""The secure element's offline wallet applet (FEDS 2025-105, "Offline Applet"): KeyGen,
SignOnce and the token store. Sans-IO: method calls in, messages out.

SignOnce removes the ownership key from the key store *before* it signs, so there is no moment
at which the key has signed and still exists; a failure in between loses the key (and the
token stays unspendable), never the opposite. That is what stops a double spend offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from offpay.crypto.keys import Algorithm, Signer, public_key_bytes
from offpay.crypto.pki import Credential, Role, TrustStore, load_certificate
from offpay.crypto.revocation import RevocationList, newer_revocations
from offpay.errors import (
    CertificateError,
    DeviceStateError,
    DoubleSpend,
    InsufficientFunds,
    LimitExceeded,
    PolicyError,
    TokenError,
)
from offpay.money import Money
from offpay.policy import accept_policy, check_payment_max
from offpay.spending import Spending
from offpay.tokens.messages import DepositRequest, MintResult
from offpay.tokens.model import (
    ENDORSE_DOMAIN,
    Address,
    Endorsement,
    Token,
    TokenBody,
    child_id,
    transition_digest,
)
from offpay.tokens.verify import History, TokenVerifier
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import IntakeKey, LimitsPolicy
from offpay.wire.sealed_upload import accept_intake_key, seal_to_intermediary

Random = Callable[[int], bytes]
ID_BYTES = 16
# Challenges an element keeps open for its online moments: a request whose answer was lost is
# sent again with the same one; the oldest lapses beyond this (its answer then restarts nothing).
OPEN_CHALLENGES = 8


@dataclass
class TokenElement:
    """One secure element: its endorsement key, its ownership keys and the tokens they own."""

    signer: Signer
    random: Random = os.urandom
    key_algorithm: Algorithm = Algorithm.ED25519
    element_id: str = ""
    chain: tuple[bytes, ...] = ()
    verifier: TokenVerifier | None = None
    revocation_version: int = 0
    policy: LimitsPolicy | None = None  # the limits its intermediary signed; None: no limits
    # Its intermediary's encryption key (issue 19, point 3): what it sends with token
    # histories goes sealed to it. None: an element provisioned without one sends in clear.
    intake_key: IntakeKey | None = None
    # Its clock and what it paid since its last online moment and today (docs/limits.md)
    spending: Spending = field(default_factory=Spending)
    _challenges: list[bytes] = field(default_factory=list, repr=False)
    _keys: dict[bytes, Signer] = field(default_factory=dict, repr=False)
    _tokens: dict[bytes, Token] = field(default_factory=dict, repr=False)

    @classmethod
    def manufacture(cls, algorithm: Algorithm = Algorithm.ED25519) -> TokenElement:
        return cls(Signer.generate(algorithm), key_algorithm=algorithm)

    @property
    def public_key(self) -> bytes:
        return public_key_bytes(self.signer.public_key)

    def provision(
        self, element_id: str, chain: tuple[bytes, ...], root: bytes, mint_chain: tuple[bytes, ...]
    ) -> None:
        """Factory provisioning: the element's certificate, the root, the minting key."""
        if self.element_id:
            raise DeviceStateError("element is already provisioned", code="device.personalised")
        trust = TrustStore(root)
        ident = trust.expect(chain, Role.ELEMENT)
        if (
            ident.id != element_id
            or public_key_bytes(
                load_certificate(chain[0]).public_key()  # type: ignore[arg-type]
            )
            != self.public_key
        ):
            raise CertificateError("certificate is not for this element's key")
        self.element_id, self.chain = element_id, chain
        self.verifier = TokenVerifier(trust, mint_chain)
        self.verifier.mint_key()

    @property
    def credential(self) -> Credential:
        return Credential(self.signer, self.chain)

    @property
    def trust(self) -> TrustStore:
        return self._verifier().trust

    def _verifier(self) -> TokenVerifier:
        if self.verifier is None:
            raise DeviceStateError("element is not provisioned", code="device.blank")
        return self.verifier

    # -- the applet's two cryptographic operations ----------------------------------------------

    def keygen(self) -> Address:
        """KeyGen: a fresh ownership key pair; the private half never leaves the element."""
        self._verifier()
        key = Signer.generate(self.key_algorithm)
        owner = public_key_bytes(key.public_key)
        self._keys[owner] = key
        signature = self.signer.sign(ENDORSE_DOMAIN + owner)
        return Address(owner, Endorsement(self.element_id, self.chain, signature))

    def sign_once(self, owner: bytes, digest: bytes) -> bytes:
        """SignOnce: sign with the ownership key and destroy it in the same step."""
        key = self._keys.pop(owner, None)
        if key is None:
            raise TokenError(
                "this ownership key has signed already or never existed", code="token.key_used"
            )
        return key.sign(digest)

    # -- the token store -------------------------------------------------------------------------

    def tokens(self) -> list[Token]:
        return sorted(self._tokens.values(), key=lambda t: (t.value.minor, t.id))

    def balance(self, currency: str = "SEK") -> Money:
        return sum((t.value for t in self._tokens.values()), Money.zero(currency))

    def holds(self, token_id: bytes) -> bool:
        return token_id in self._tokens

    def verify(self, token: Token) -> History:
        return self._verifier().verify(token)

    def store(self, token: Token) -> History:
        """Take a token whose owner key this element generated, after verifying it and
        checking it against the policy's limits (:meth:`check_receipt`)."""
        if token.owner not in self._keys:
            raise TokenError(
                "the token is not owned by a key of this element", code="token.not_ours"
            )
        if token.id in self._tokens:
            raise TokenError("the token is already in this wallet", code="token.duplicate")
        history = self.check_receipt(token)
        self._tokens[token.id] = token
        return history

    def check_receipt(self, token: Token) -> History:
        """Verify ``token`` and refuse it if taking it would break a limit of the policy
        (:meth:`check_limits`); a minted token (a withdrawal) has no ancestors. Changes
        nothing."""
        history = self.verify(token)
        self.check_limits(token.value, history.length)
        return history

    def check_offer(self, token: Token) -> History:
        """Before giving an address for ``token``: the child it becomes carries one ancestor
        more (``token`` itself), and the limits must hold for that child."""
        history = self.verify(token)
        self.check_limits(token.value, history.length + 1)
        return history

    def check_limits(self, value: Money, ancestors: int) -> None:
        """The policy's limits on taking a token worth ``value`` with ``ancestors``: the most
        value this element may hold, and, for a token from another element (one with
        ancestors), the per-payment maximum and the most ancestors it may carry offline."""
        policy = self.policy
        if policy is None:
            return
        if ancestors > 0:
            check_payment_max(policy, value)
            most = policy.token_max_ancestry
            if most is not None and ancestors > most:
                raise LimitExceeded(
                    "token_max_ancestry",
                    f"the token carries {ancestors} ancestors; this element accepts "
                    f"at most {most} offline",
                )
        cap = policy.element_max_holding
        if cap is not None:
            held = self.balance(cap.currency)
            if held + value > cap:
                raise LimitExceeded(
                    "element_max_holding", f"the element may hold at most {cap}; it holds {held}"
                )

    # -- paying offline: the limits on spending over time ------------------------------------

    @property
    def clock(self) -> int | None:
        """The latest signed time this element has seen (Unix seconds): what it signs for a
        counterparty in a transfer's discovery proof."""
        return self.spending.clock

    def tell_time(self, now: int | None) -> None:
        """The host phone's time. Like a terminal module's clock it only moves forward, so a
        host that sets it back gains nothing; one that runs it ahead only makes this element
        stricter until its next online moment sets it right."""
        self.spending = self.spending.at(now)

    def check_payment(self, amount: Money, counterparty_time: int | None = None) -> None:
        """Refuse to pay ``amount`` offline beyond a limit of the policy: the per-payment
        maximum, the offline total since the last online moment, the day's payments and
        amount, the offline hours (offpay.spending, the card's rule). ``counterparty_time``:
        the receiving element's signed clock. Changes nothing."""
        if self.policy is not None:
            self.spending.at(counterparty_time).check(self.policy, amount)

    def pay(self, token_id: bytes, to: Address, counterparty_time: int | None = None) -> Token:
        """An offline payment: :meth:`check_payment`, then the whole token to ``to`` (its
        value is the amount, :meth:`select`), counted against the limits."""
        token = self._take(token_id)
        self.check_payment(token.value, counterparty_time)
        child = self.transfer(token_id, to)
        self.spending = self.spending.at(counterparty_time).paid(token.value)
        return child

    # -- online moments ---------------------------------------------------------------------------

    def challenge(self) -> bytes:
        """A fresh nonce for a request to the intermediary: only an answer that carries it is
        an online moment for this element (an old answer, replayed, restarts nothing)."""
        nonce = self.random(ID_BYTES)
        self._challenges = [*self._challenges[-(OPEN_CHALLENGES - 1) :], nonce]
        return nonce

    def online(self, data: bytes, institution: str) -> tuple[MintResult, bool]:
        """An answer of ``institution``'s token desk, opened here (signed by its engine,
        addressed to this element: the element trusts no app): its revocation list and a newer
        policy are taken; if it answers an open challenge, its signed time is this element's
        online moment, which restarts the offline total and the offline hours. The answer, and
        whether it was an online moment."""
        answer, _ = open_signed(
            Signed.from_bytes(data),
            MintResult,
            self.trust,
            Role.ENGINE,
            receiver=self.element_id,
            institution=institution,
        )
        self.apply_revocations(answer.revocations)
        if answer.policy is not None:
            try:
                self.apply_policy(answer.policy, institution)
            except PolicyError as exc:
                if exc.code != "policy.downgrade":  # an old answer with an old policy: ignored
                    raise
        if answer.nonce not in self._challenges:
            return answer, False
        self._challenges.remove(answer.nonce)
        self.spending = self.spending.synced(answer.engine_time)
        return answer, True

    def apply_policy(self, signed: Signed[LimitsPolicy], institution: str) -> LimitsPolicy:
        """A newer limits policy signed by ``institution``'s engine, taken at an online
        moment; an older or conflicting one is refused (offpay.policy.accept_policy)."""
        self.policy = accept_policy(signed, self.trust, institution, self.policy)
        return self.policy

    def take_intake_key(self, signed: Signed[IntakeKey], institution: str) -> IntakeKey:
        """``institution``'s signed intake key, given at provisioning: verified as signed by its
        engine (a relay cannot swap in its own), kept unless older than the one held."""
        self.intake_key = accept_intake_key(signed, self.trust, institution, self.intake_key)
        return self.intake_key

    def deposit_request(
        self, token_id: bytes, vault: Address, engine: str, renew_to: Address | None
    ) -> bytes:
        """DepositToken, or a renewal to ``renew_to``: the token signed over to the vault's
        ``vault`` address, in a request signed by this element and sealed to its intermediary's
        intake key. The token carries its whole history (every earlier owner); the phone app
        that carries the request needs none of it, so it never leaves the element in clear."""
        signed_over = self.transfer(token_id, vault)
        request = DepositRequest(self.element_id, engine, self.challenge(), signed_over, renew_to)
        return seal_to_intermediary(sign(request, self.credential).to_bytes(), self.intake_key)

    def release(self, token_id: bytes) -> None:
        """Burn a token this element holds (redeemed): the token and its key are gone."""
        token = self._tokens.pop(token_id, None)
        if token is not None:
            self._keys.pop(token.owner, None)

    def _take(self, token_id: bytes) -> Token:
        token = self._tokens.get(token_id)
        if token is None:
            raise TokenError("no such token in this wallet", code="token.unknown")
        return token

    def _transition(self, parents: list[Token], children: list[TokenBody]) -> list[Token]:
        """Sign one transition with every parent's key (SignOnce) and build its children,
        whose ids derive from the parents and their owners."""
        parent_ids = [p.id for p in parents]
        children = [replace(c, id=child_id(parent_ids, c.owner, c.value)) for c in children]
        digest = transition_digest(parent_ids, children)
        proofs = tuple(self.sign_once(p.owner, digest) for p in parents)
        for p in parents:
            del self._tokens[p.id]
        return [
            Token(
                c.id,
                c.value,
                c.owner,
                c.endorsement,
                proofs,
                tuple(parents),
                tuple(o for o in children if o is not c),
            )
            for c in children
        ]

    def _body(self, value: Money, address: Address) -> TokenBody:
        """A child before its transition: its id is derived there."""
        return TokenBody(b"", value, address.owner, address.endorsement)

    # -- what the owner can do with tokens --------------------------------------------------------

    def transfer(self, token_id: bytes, to: Address) -> Token:
        """Hand a whole token to ``to``: its one proof is this element's SignOnce."""
        self.verify_address(to)
        token = self._take(token_id)
        (child,) = self._transition([token], [self._body(token.value, to)])
        return child

    def split(self, token_id: bytes, amount: Money) -> tuple[Token, Token]:
        """Make change: ``amount`` and the rest, both owned by fresh keys of this element."""
        token = self._take(token_id)
        if not (0 < amount.minor < token.value.minor) or amount.currency != token.value.currency:
            raise TokenError("a split must leave two positive parts", code="token.bad_split")
        wanted = self._body(amount, self.keygen())
        change = self._body(token.value - amount, self.keygen())
        first, second = self._transition([token], [wanted, change])
        self._tokens[first.id] = first
        self._tokens[second.id] = second
        return first, second

    def merge(self, token_ids: Iterable[bytes]) -> Token:
        """Several tokens into one, owned by a fresh key of this element."""
        parents = [self._take(i) for i in dict.fromkeys(token_ids)]
        if len(parents) < 2:
            raise TokenError("a merge needs two or more tokens", code="token.bad_merge")
        self._check_joint_history(parents)
        total = sum((p.value for p in parents), Money.zero(parents[0].value.currency))
        (child,) = self._transition(parents, [self._body(total, self.keygen())])
        self._tokens[child.id] = child
        return child

    def _check_joint_history(self, parents: list[Token]) -> None:
        """Tokens verified one by one can still share an ancestor spent twice (two branches
        of a double spend); merged, the child would be worthless. Refuse to merge them: each
        can still be deposited on its own, where the double spend is caught."""
        seen: dict[bytes, bytes] = {}
        for parent in parents:
            history = self.verify(parent)
            for token_id, transition in history.consumed.items():
                if seen.setdefault(token_id, transition) != transition:
                    element = history.endorsers.get(token_id, "")
                    raise DoubleSpend(
                        f"these tokens share an ancestor spent twice ({token_id.hex()})",
                        token_id=token_id,
                        element=element,
                    )

    def select(self, amount: Money) -> Token:
        """A token worth exactly ``amount``, splitting or merging what the wallet holds."""
        if amount.minor <= 0:
            raise TokenError("amount must be positive", code="token.bad_amount")
        if self.balance(amount.currency) < amount:
            raise InsufficientFunds(f"the wallet holds {self.balance(amount.currency)}")
        for t in self.tokens():
            if t.value == amount:
                return t
        bigger = [t for t in self.tokens() if t.value > amount]
        if bigger:
            return self.split(bigger[0].id, amount)[0]
        picked: list[Token] = []
        total = Money.zero(amount.currency)
        for t in sorted(self.tokens(), key=lambda t: -t.value.minor):
            picked.append(t)
            total = total + t.value
            if total >= amount:
                break
        merged = self.merge(t.id for t in picked)
        return merged if merged.value == amount else self.split(merged.id, amount)[0]

    def verify_address(self, to: Address) -> None:
        """An address endorsed by a genuine element that this element does not know revoked."""
        self._verifier().check_address(to)

    def apply_revocations(self, signed: Signed[RevocationList]) -> None:
        """A newer signed revocation list, taken at an online moment; older ones are ignored."""
        rl = newer_revocations(signed, self.trust, self.revocation_version)
        if rl is not None:
            self.trust.revoked = set(rl.devices)
            self.revocation_version = rl.version
