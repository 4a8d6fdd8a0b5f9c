"""Token history verification (FEDS 2025-105, "Counterfeiting" and "Double-spending"): every
field of the token and of each ancestor back to the minted roots.

What it refuses, each with its own code: a raised value (the children of a transition do not
sum to its parents), a changed owner or a forged proof (a signature that does not verify), an
endorsement not made by an issuer-endorsed element, and an ancestry edited to hide a double
spend — the same token consumed by two transitions anywhere in the history, or two different
tokens under one id. The same checks run offline in the receiver's element and online at
deposit and redemption.
"""

from __future__ import annotations

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
    body_digest,
    child_id,
    mint_digest,
    transition_digest,
)


@dataclass(frozen=True)
class History:
    """What a verified token's history consists of: for every ancestor, the transition that
    consumed it, and the element that endorsed its owner (for attribution)."""

    consumed: dict[bytes, bytes]
    endorsers: dict[bytes, str]

    @property
    def length(self) -> int:
        return len(self.consumed)


@dataclass
class TokenVerifier:
    trust: TrustStore
    mint_chain: tuple[bytes, ...]
    _mint_key: PublicKey | None = field(default=None, repr=False)

    def mint_key(self) -> PublicKey:
        if self._mint_key is None:
            ident = self.trust.expect(self.mint_chain, Role.MINT)
            self._mint_key = ident.public_key
        return self._mint_key

    def endorser(self, token_owner: bytes, endorsement_chain: tuple[bytes, ...]) -> Identity:
        """The element whose certificate vouches for an ownership key (revocation ignored:
        history made before a revocation stays valid)."""
        return self.trust.expect(endorsement_chain, Role.ELEMENT, check_revoked=False)

    def verify(self, token: Token, *, currency: str | None = None) -> History:
        """The token's history if every field of it and of its ancestors verifies; the
        token's own current owner must be endorsed by an element that is not revoked."""
        history = History({}, {})
        seen: dict[bytes, bytes] = {}
        done: set[bytes] = set()
        self._walk(token, history, seen, done, currency or token.value.currency)
        if token.id in history.consumed:
            raise TokenError("a token cannot be its own ancestor", code="token.cycle")
        if token.endorsement.element in self.trust.revoked:
            raise TokenError(
                f"the token's owner key is endorsed by revoked element {token.endorsement.element}",
                code="token.revoked",
            )
        return history

    def _walk(
        self,
        t: Token,
        history: History,
        seen: dict[bytes, bytes],
        done: set[bytes],
        currency: str,
    ) -> None:
        digest = body_digest(t.body)
        if seen.setdefault(t.id, digest) != digest:
            raise TokenError(
                f"two different tokens carry the id {t.id.hex()}", code="token.conflicting_id"
            )
        if digest in done:
            return  # the same ancestor reached by two paths (split, then merge): verified
        if t.value.currency != currency or t.value.minor <= 0:
            raise TokenError("a token's value must be positive", code="token.bad_value")
        self.check_endorsement(t.owner, t.endorsement)
        if t.is_root:
            if len(t.proof) != 1 or t.siblings:
                raise TokenError("a minted token carries one proof, no siblings")
            self._check(self.mint_key(), t.proof[0], mint_digest(t.body), "mint proof", t)
        else:
            self._check_transition(t, history, seen, done, currency)
        done.add(digest)

    def check_address(self, address: Address) -> None:
        """Before sending to an address: endorsed by a genuine element that is not revoked."""
        self.check_endorsement(address.owner, address.endorsement)
        if address.endorsement.element in self.trust.revoked:
            raise TokenError(f"{address.endorsement.element} is revoked", code="token.revoked")

    def check_endorsement(self, owner: bytes, endorsement: Endorsement) -> None:
        element = self.endorser(owner, endorsement.chain)
        if element.id != endorsement.element:
            raise TokenError("endorsement names another element than its certificate")
        try:
            verify_signature(element.public_key, endorsement.signature, ENDORSE_DOMAIN + owner)
        except OffpayError:
            raise TokenError(
                "the ownership key is not endorsed by an issuer-endorsed element",
                code="token.bad_endorsement",
            ) from None

    def _check(self, key: PublicKey, signature: bytes, digest: bytes, what: str, t: Token) -> None:
        try:
            verify_signature(key, signature, digest)
        except OffpayError:
            raise TokenError(
                f"the {what} of token {t.id.hex()} does not verify", code="token.bad_proof"
            ) from None

    def _check_transition(
        self,
        t: Token,
        history: History,
        seen: dict[bytes, bytes],
        done: set[bytes],
        currency: str,
    ) -> None:
        parents = t.ancestors
        if len(t.proof) != len(parents):
            raise TokenError("a token needs one proof per parent", code="token.bad_proof")
        if len({p.id for p in parents}) != len(parents):
            raise TokenError("a transition names a parent twice", code="token.repeated_ancestor")
        children = (t.body, *t.siblings)
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
        parent_ids = [p.id for p in parents]
        for child in children:
            if child.id != child_id(parent_ids, child.owner, child.value):
                raise TokenError(
                    "a token's id is not derived from its parents and owner",
                    code="token.bad_id",
                )
        digest = transition_digest(parent_ids, children)
        for parent, proof in zip(parents, t.proof, strict=True):
            self._check(_owner_key(parent), proof, digest, "transfer proof", t)
            # The parent is verified in full (endorsement included) before anything about it,
            # such as whom to blame for a double spend, is believed.
            self._walk(parent, history, seen, done, currency)
            before = history.consumed.setdefault(parent.id, digest)
            history.endorsers[parent.id] = parent.endorsement.element
            if before != digest:
                raise DoubleSpend(
                    f"token {parent.id.hex()} was spent twice; its owner key was endorsed by "
                    f"{parent.endorsement.element}",
                    token_id=parent.id,
                    element=parent.endorsement.element,
                )


def _owner_key(t: Token) -> PublicKey:
    try:
        return load_der_public_key(t.owner)  # type: ignore[return-value]
    except (ValueError, TypeError):
        raise TokenError("a token's owner is not a public key", code="token.bad_owner") from None
