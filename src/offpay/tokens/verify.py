"""Token history verification (FEDS 2025-105, "Counterfeiting" and "Double-spending"): every
field of the token and of each ancestor back to the minted roots.

What it refuses, each with its own code: a raised value (the children of a transition do not
sum to its parents), a changed owner or a forged proof (a signature that does not verify), an
endorsement not made by an issuer-endorsed element, and an ancestry edited to hide a double
spend — the same token consumed by two transitions anywhere in the history, or two different
tokens under one id. The same checks run offline in the receiver's element and online at
deposit and redemption.

Cost. A history of n ancestors carries 2n + 2 signatures: each token's endorsement (its owner
key, signed by the element that generated it), each transition's proof, and the mint's proof
of the root. The walk visits each token once and encodes each body once. A verifier also
remembers (bounded) the signatures it has already verified, by a digest of the exact key,
signature and message, so a token that comes back, or the token of phase 3 of a transfer whose
parent phase 2 verified, costs only the signatures of its new hops. Every other check — values,
ids, double spends, certificates, revocation — runs on every verification.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.serialization import load_der_public_key

from offpay.crypto.keys import PublicKey, verify_signature
from offpay.crypto.pki import Identity, Role, TrustStore
from offpay.errors import DoubleSpend, OffpayError, TokenError
from offpay.tokens.model import (
    ENDORSE_DOMAIN,
    Address,
    Endorsement,
    Token,
    child_id,
    encode_body,
    mint_digest_of,
    transition_digest_of,
)

REMEMBERED_SIGNATURES = 4096  # about twenty 100-ancestor histories; 32 bytes each

# what kind of key a remembered signature was verified under (part of its digest)
_ELEMENT, _OWNER, _MINT = b"E", b"O", b"M"


@dataclass(frozen=True)
class History:
    """What a verified token's history consists of: for every ancestor, the transition that
    consumed it, and the element that endorsed its owner (for attribution)."""

    consumed: dict[bytes, bytes]
    endorsers: dict[bytes, str]

    @property
    def length(self) -> int:
        return len(self.consumed)


class VerifiedSignatures:
    """A bounded memory of signatures that verified, least recently used forgotten first.

    An entry is the SHA-256 of the exact key (a certificate fingerprint or an owner key's DER),
    signature and message, so only the very same verification is skipped; anything edited is a
    different entry and is verified. Only successes are remembered."""

    def __init__(self, capacity: int = REMEMBERED_SIGNATURES) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def entry(kind: bytes, key: bytes, signature: bytes, message: bytes) -> bytes:
        parts = [kind, len(key).to_bytes(4, "big"), key, len(signature).to_bytes(4, "big")]
        return hashlib.sha256(b"".join([*parts, signature, message])).digest()

    def knows(self, entry: bytes) -> bool:
        try:  # one step each, so that threads sharing a verifier (a service) cannot break it
            self._entries.move_to_end(entry)
        except KeyError:
            return False
        return True

    def add(self, entry: bytes) -> None:
        if self.capacity <= 0:
            return
        self._entries[entry] = None
        self._entries.move_to_end(entry)
        while len(self._entries) > self.capacity:
            try:
                self._entries.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break

    def clear(self) -> None:
        self._entries.clear()


# one step of the walk: (what, token, digest, proof)
#   ("enter", token): check the token's own fields and schedule its parents
#   ("proof", parent, transition digest, proof): the parent's owner signed the transition
#   ("consume", parent, transition digest): record the parent as consumed by the transition
#   ("done", token, body digest): the token and all its ancestors verified
_Step = tuple[str, Token, bytes, bytes]


@dataclass
class _Walk:
    """The state of one verification."""

    currency: str
    history: History = field(default_factory=lambda: History({}, {}))
    seen: dict[bytes, bytes] = field(default_factory=dict)  # token id -> body digest
    done: set[bytes] = field(default_factory=set)  # body digests verified in full


@dataclass
class TokenVerifier:
    trust: TrustStore
    mint_chain: tuple[bytes, ...]
    remembered: VerifiedSignatures = field(default_factory=VerifiedSignatures, repr=False)
    _mint: Identity | None = field(default=None, repr=False)

    def mint_key(self) -> PublicKey:
        return self._mint_identity().public_key

    def _mint_identity(self) -> Identity:
        if self._mint is None:
            self._mint = self.trust.expect(self.mint_chain, Role.MINT)
        return self._mint

    def fresh(self) -> TokenVerifier:
        """The same trust (certificates, revocations) and an empty memory of signatures: a
        verifier that never saw any of a token's history (benchmarks, tests)."""
        return TokenVerifier(
            self.trust, self.mint_chain, VerifiedSignatures(self.remembered.capacity), self._mint
        )

    def endorser(self, token_owner: bytes, endorsement_chain: tuple[bytes, ...]) -> Identity:
        """The element whose certificate vouches for an ownership key (revocation ignored:
        history made before a revocation stays valid)."""
        return self.trust.expect(endorsement_chain, Role.ELEMENT, check_revoked=False)

    def verify(self, token: Token, *, currency: str | None = None) -> History:
        """The token's history if every field of it and of its ancestors verifies; the
        token's own current owner must be endorsed by an element that is not revoked."""
        walk = _Walk(currency or token.value.currency)
        self._walk(token, walk)
        if token.id in walk.history.consumed:
            raise TokenError("a token cannot be its own ancestor", code="token.cycle")
        if token.endorsement.element in self.trust.revoked:
            raise TokenError(
                f"the token's owner key is endorsed by revoked element {token.endorsement.element}",
                code="token.revoked",
            )
        return walk.history

    def _walk(self, token: Token, w: _Walk) -> None:
        """Depth first, parents in order, without recursion (a history may be long): a
        parent's proof is checked before the parent is entered, and the parent is verified in
        full before its consumption is recorded, so whom to blame for a double spend is only
        believed once the parent's own endorsement verified."""
        stack: list[_Step] = [("enter", token, b"", b"")]
        while stack:
            step, t, digest, proof = stack.pop()
            if step == "enter":
                stack.extend(self._enter(t, w))
            elif step == "proof":  # the parent's owner signed the transition
                self._check(_OWNER, t.owner, None, proof, digest)
            elif step == "consume":
                self._consume(t, digest, w)
            else:
                w.done.add(digest)

    def _enter(self, t: Token, w: _Walk) -> list[_Step]:
        """Check one token's own fields; the steps still to do for its parents (reversed, for
        the stack)."""
        encoded = encode_body(t)
        digest = hashlib.sha256(encoded).digest()
        if w.seen.setdefault(t.id, digest) != digest:
            raise TokenError(
                f"two different tokens carry the id {t.id.hex()}", code="token.conflicting_id"
            )
        if digest in w.done:
            return []  # the same ancestor reached by two paths (split, then merge): verified
        if t.value.currency != w.currency or t.value.minor <= 0:
            raise TokenError("a token's value must be positive", code="token.bad_value")
        self.check_endorsement(t.owner, t.endorsement)
        if not t.ancestors:  # a minted root
            if len(t.proof) != 1 or t.siblings:
                raise TokenError("a minted token carries one proof, no siblings")
            mint = self._mint_identity()
            self._check(
                _MINT, mint.fingerprint, mint.public_key, t.proof[0], mint_digest_of(encoded)
            )
            w.done.add(digest)
            return []
        transition = self._check_transition(t, encoded, w.currency)
        steps: list[_Step] = [("done", t, digest, b"")]
        for parent, proof in reversed(list(zip(t.ancestors, t.proof, strict=True))):
            steps.append(("consume", parent, transition, b""))
            steps.append(("enter", parent, b"", b""))
            steps.append(("proof", parent, transition, proof))
        return steps

    def _consume(self, parent: Token, transition: bytes, w: _Walk) -> None:
        before = w.history.consumed.setdefault(parent.id, transition)
        w.history.endorsers[parent.id] = parent.endorsement.element
        if before != transition:
            raise DoubleSpend(
                f"token {parent.id.hex()} was spent twice; its owner key was endorsed by "
                f"{parent.endorsement.element}",
                token_id=parent.id,
                element=parent.endorsement.element,
            )

    def check_address(self, address: Address) -> None:
        """Before sending to an address: endorsed by a genuine element that is not revoked."""
        self.check_endorsement(address.owner, address.endorsement)
        if address.endorsement.element in self.trust.revoked:
            raise TokenError(f"{address.endorsement.element} is revoked", code="token.revoked")

    def check_endorsement(self, owner: bytes, endorsement: Endorsement) -> None:
        element = self.endorser(owner, endorsement.chain)
        if element.id != endorsement.element:
            raise TokenError("endorsement names another element than its certificate")
        entry = VerifiedSignatures.entry(
            _ELEMENT, element.fingerprint, endorsement.signature, ENDORSE_DOMAIN + owner
        )
        if self.remembered.knows(entry):
            return
        try:
            verify_signature(element.public_key, endorsement.signature, ENDORSE_DOMAIN + owner)
        except OffpayError:
            raise TokenError(
                "the ownership key is not endorsed by an issuer-endorsed element",
                code="token.bad_endorsement",
            ) from None
        self.remembered.add(entry)

    def _check(
        self, kind: bytes, key_id: bytes, key: PublicKey | None, signature: bytes, digest: bytes
    ) -> None:
        """Verify a proof under the key ``key_id`` names (an owner key's DER is parsed only
        when the signature is not remembered)."""
        entry = VerifiedSignatures.entry(kind, key_id, signature, digest)
        if self.remembered.knows(entry):
            return
        if key is None:
            key = _owner_key(key_id)
        try:
            verify_signature(key, signature, digest)
        except OffpayError:
            raise TokenError(
                "the mint's proof of a minted token does not verify"
                if kind == _MINT
                else "a proof that spends a token does not verify",
                code="token.bad_proof",
            ) from None
        self.remembered.add(entry)

    def _check_transition(self, t: Token, encoded: bytes, currency: str) -> bytes:
        """The transition that made ``t``: its structure, values and ids; its digest."""
        parents = t.ancestors
        if len(t.proof) != len(parents):
            raise TokenError("a token needs one proof per parent", code="token.bad_proof")
        parent_ids = [p.id for p in parents]
        if len(set(parent_ids)) != len(parents):
            raise TokenError("a transition names a parent twice", code="token.repeated_ancestor")
        children = (t, *t.siblings)
        if len({c.id for c in children}) != len(children):
            raise TokenError("two children of one transition share an id")
        for sibling in t.siblings:
            if sibling.value.currency != currency or sibling.value.minor <= 0:
                raise TokenError("a sibling's value must be positive", code="token.bad_value")
        total_in = sum(p.value.minor for p in parents)
        total_out = sum(c.value.minor for c in children)
        if total_in != total_out:
            raise TokenError(
                f"children worth {total_out} come from parents worth {total_in}",
                code="token.value_mismatch",
            )
        for child in children:
            if child.id != child_id(parent_ids, child.owner, child.value):
                raise TokenError(
                    "a token's id is not derived from its parents and owner",
                    code="token.bad_id",
                )
        return transition_digest_of(parent_ids, [encoded, *(encode_body(s) for s in t.siblings)])


def _owner_key(owner: bytes) -> PublicKey:
    try:
        return load_der_public_key(owner)  # type: ignore[return-value]
    except (ValueError, TypeError):
        raise TokenError("a token's owner is not a public key", code="token.bad_owner") from None
