"""A SIMULATED HARDWARE BREAK of a phone's token secure element (FEDS 2025-105, "Threat
Modeling"): what an attacker who broke one could do. The attack suite and its tests play that
power through this module only; nothing in the protocol calls it.

* :class:`DoubleSigningElement`: SignOnce signs but keeps the ownership key, and the store
  keeps the token it signed away, so the element can spend it again; it also merges whatever
  it holds, double-spent branches included.
* :func:`break_element` and :func:`repair_element` turn an element into one and back.
* :func:`store_unverified`: the broken store holds whatever token the attacker writes in.
"""

from __future__ import annotations

from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token, TokenBody


class DoubleSigningElement(TokenElement):
    """A broken element: it signs each ownership key as often as asked."""

    def sign_once(self, owner: bytes, digest: bytes) -> bytes:
        key = self._keys.get(owner)
        signature = super().sign_once(owner, digest)
        if key is not None:
            self._keys[owner] = key
        return signature

    def _check_joint_history(self, parents: list[Token]) -> None:
        """A broken element merges whatever it holds, double-spent branches included."""

    def _transition(self, parents: list[Token], children: list[TokenBody]) -> list[Token]:
        made = super()._transition(parents, children)
        for parent in parents:
            self._tokens[parent.id] = parent
        return made


def break_element(element: TokenElement) -> None:
    """From now on ``element`` signs twice and keeps what it spent."""
    element.__class__ = DoubleSigningElement


def repair_element(element: TokenElement) -> None:
    """``element`` is an honest element again (what it holds stays)."""
    element.__class__ = TokenElement


def store_unverified(element: TokenElement, token: Token) -> None:
    """The element's store holds ``token`` and nothing else, unverified."""
    element._tokens = {token.id: token}
