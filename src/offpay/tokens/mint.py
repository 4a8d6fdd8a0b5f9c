"""The central bank's minting service, the paper's core transaction processor (CTP): it mints
tokens, keeps every token it minted, and at redemption records every token the history
consumed, so that a token spent twice is caught when the second branch comes back online.
The element that signed twice is revoked; the signed revocation list reaches devices at their
next online moment."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine, func, insert, select, update

from offpay.crypto.keys import Algorithm
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.crypto.revocation import RevocationList
from offpay.errors import DoubleSpend, InsufficientFunds, Refused, TokenError
from offpay.money import Money
from offpay.store import schema
from offpay.store.seen import answered, remember
from offpay.tokens.messages import DoubleSpendReport, MintRequest, MintResult, RedeemRequest
from offpay.tokens.model import Token, mint_digest
from offpay.tokens.verify import TokenVerifier
from offpay.wire.envelope import Signed, open_signed, sign

MINT_ID = "central-bank/mint"
REDEEMED = b"\x00" * 32  # the "transition" that consumes a redeemed token


class Central(Protocol):
    """What the minting service uses of the central bank that holds it
    (:class:`offpay.central.bank.CentralBank`, which imports this module)."""

    currency: str
    algorithm: Algorithm
    clock: Callable[[], dt.datetime]
    db: Engine
    root: Authority
    trust: TrustStore

    def revoked_devices(self) -> list[str]: ...

    def revocation_list(self) -> Signed[RevocationList]: ...

    def revoke(self, device: str, reason: str) -> None: ...


class MintingService:
    def __init__(self, central: Central, credential: Credential | None = None) -> None:
        """``credential``: the minting key kept from an earlier run (a served central bank
        restarts with it, so tokens it minted before still verify); a fresh one otherwise."""
        self.central = central
        self.credential: Credential = credential or central.root.credential_for(
            MINT_ID, Role.MINT, central.clock(), central.algorithm
        )
        self.verifier = TokenVerifier(central.trust, self.credential.chain)

    @property
    def chain(self) -> tuple[bytes, ...]:
        return self.credential.chain

    # -- reading --------------------------------------------------------------------------------

    def outstanding(self) -> Money:
        """Value in tokens minted and not yet redeemed: money held offline."""
        with self.central.db.connect() as conn:
            minted = conn.execute(select(func.coalesce(func.sum(schema.minted.c.value), 0)))
            out = int(minted.scalar_one())
            redeemed = conn.execute(select(func.coalesce(func.sum(schema.redeemed.c.value), 0)))
            out -= int(redeemed.scalar_one())
        return Money(out, self.central.currency)

    def revoked_elements(self) -> list[str]:
        return [d for d in self.central.revoked_devices() if d.startswith("element:")]

    def revocation_list(self) -> Signed[RevocationList]:
        return self.central.revocation_list()

    def revoke(self, element: str, reason: str) -> None:
        self.central.revoke(element, reason)

    # -- requests from intermediaries -------------------------------------------------------------

    def mint(self, data: bytes) -> bytes:
        """MintToken: a root token of ``value`` owned by the requested address."""
        req, ident = open_signed(
            data,
            MintRequest,
            self.central.trust,
            Role.ENGINE,
            receiver=MINT_ID,
            now=self.central.clock(),
        )
        self._positive(req.value)
        self.verifier.check_address(req.address)
        token_id = os.urandom(16)
        body_token = Token(
            token_id, req.value, req.address.owner, req.address.endorsement, (), (), ()
        )
        proof = self.credential.signer.sign(mint_digest(body_token.body))
        token = Token(
            token_id, req.value, req.address.owner, req.address.endorsement, (proof,), (), ()
        )
        t = schema.institutions
        revocations = self.revocation_list()  # read before the write transaction
        with self.central.db.begin() as conn:
            cached = answered(conn, schema.central_seen, ident.id, req.nonce)
            if cached is not None:
                return cached
            moved = conn.execute(
                update(t)
                .where(t.c.name == ident.institution, t.c.holdings >= req.value.minor)
                .values(holdings=t.c.holdings - req.value.minor)
            )
            if moved.rowcount != 1:
                raise InsufficientFunds(f"{ident.institution}'s customers do not hold {req.value}")
            conn.execute(
                insert(schema.minted).values(
                    id=token_id, value=req.value.minor, institution=ident.institution
                )
            )
            response = self._result(ident.id, req.nonce, (token,), req.value, revocations)
            remember(conn, schema.central_seen, ident.id, req.nonce, response)
        return response

    def redeem(self, data: bytes) -> bytes:
        """RedeemToken: verify the whole history, record every token it consumed, and catch a
        token consumed by two different transitions (a double spend)."""
        req, ident = open_signed(
            data,
            RedeemRequest,
            self.central.trust,
            Role.ENGINE,
            receiver=MINT_ID,
            now=self.central.clock(),
        )
        token = req.token
        owner = self.verifier.endorser(token.owner, token.endorsement.chain)
        if owner.institution != ident.institution:
            raise Refused("only the vault's own intermediary may redeem it", code="mint.not_owner")
        with self.central.db.connect() as conn:
            cached = answered(conn, schema.central_seen, ident.id, req.nonce)
        if cached is not None:
            return cached
        try:
            history = self.verifier.verify(token)
        except DoubleSpend as exc:
            self.revoke(exc.element, f"double spend of token {exc.token_id.hex()}")
            raise
        c, t = schema.consumed, schema.institutions
        revocations = self.revocation_list()
        with self.central.db.begin() as conn:
            if conn.execute(
                select(schema.redeemed.c.id).where(schema.redeemed.c.id == token.id)
            ).first():
                raise TokenError("this token was redeemed already", code="token.redeemed")
            ids = [*history.consumed, token.id]
            known = (
                {
                    bytes(r.id): bytes(r.transition)
                    for r in conn.execute(select(c).where(c.c.id.in_(ids))).all()
                }
                if ids
                else {}
            )
            if token.id in known:
                raise TokenError("this token was spent already", code="token.spent")
            clash = next((i for i, d in history.consumed.items() if known.get(i, d) != d), None)
            if clash is None:
                roots = _roots(token)
                minted = {
                    bytes(r.id): r.value
                    for r in conn.execute(
                        select(schema.minted).where(schema.minted.c.id.in_(list(roots)))
                    ).all()
                }
                if any(minted.get(i) != v for i, v in roots.items()):
                    raise TokenError(
                        "a root of this token was never minted", code="token.not_minted"
                    )
                for i, d in history.consumed.items():
                    if i not in known:
                        conn.execute(
                            insert(c).values(id=i, transition=d, element=history.endorsers[i])
                        )
                conn.execute(insert(c).values(id=token.id, transition=REDEEMED, element=owner.id))
                conn.execute(
                    insert(schema.redeemed).values(
                        id=token.id, value=token.value.minor, institution=ident.institution
                    )
                )
                conn.execute(
                    update(t)
                    .where(t.c.name == ident.institution)
                    .values(holdings=t.c.holdings + token.value.minor)
                )
                response = self._result(ident.id, req.nonce, (), token.value, revocations)
                remember(conn, schema.central_seen, ident.id, req.nonce, response)
        if clash is not None:
            element = history.endorsers[clash]
            self.revoke(element, f"double spend of token {clash.hex()}")
            raise DoubleSpend(
                f"token {clash.hex()} was spent twice; element {element} is revoked",
                token_id=clash,
                element=element,
            )
        return response

    def report(self, data: bytes) -> bytes:
        """Evidence of a double spend found offline: verified here, never taken on trust."""
        req, ident = open_signed(
            data,
            DoubleSpendReport,
            self.central.trust,
            Role.ENGINE,
            receiver=MINT_ID,
            now=self.central.clock(),
        )
        try:
            self.verifier.verify(req.token)
        except DoubleSpend as exc:
            self.revoke(exc.element, f"double spend of token {exc.token_id.hex()}")
            revocations = self.revocation_list()
            return self._result(
                ident.id, req.nonce, (), Money.zero(self.central.currency), revocations
            )
        raise Refused("the token shows no double spend", code="mint.no_double_spend")

    def _positive(self, value: Money) -> None:
        if value.currency != self.central.currency or value.minor <= 0:
            raise Refused("a token must have a positive value", code="mint.bad_value")

    def _result(
        self,
        to: str,
        nonce: bytes,
        tokens: tuple[Token, ...],
        value: Money,
        revocations: Signed[RevocationList],
    ) -> bytes:
        result = MintResult(MINT_ID, to, nonce, tokens, value, revocations)
        return sign(result, self.credential).to_bytes()


def _roots(token: Token) -> dict[bytes, int]:
    """The minted roots of a token's history, with their values."""
    roots: dict[bytes, int] = {}
    seen: set[bytes] = set()
    stack = [token]
    while stack:
        t = stack.pop()
        if t.id in seen:
            continue
        seen.add(t.id)
        if t.is_root:
            roots[t.id] = t.value.minor
        stack.extend(t.ancestors)
    return roots
