"""The secure elements the token executors drive: the real applet with one choice made
deterministic, and the broken element of an attack.

The applet lists its tokens by value, then by id; ids are random (minted ids, and child ids
derived from fresh keys), so among tokens of equal value the one ``select`` pays with is a coin
toss. The protocol allows any of them. The simulator's elements break that tie by arrival (the
order tokens entered the element), so the real executor and the fast model pick the same token,
and with it the same ancestry and the same double spends. Nothing else of the applet changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from offpay.money import Money
from offpay.sim.token_demo import BrokenSignOnceElement
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token
from offpay.tokens.verify import History


class ArrivalElement(TokenElement):
    """A genuine element whose equal-valued tokens are listed in the order they arrived."""

    arrival: dict[bytes, int]
    arrivals: itertools.count[int]
    only: frozenset[bytes] | None  # an attacker's firmware: spend only these (see BrokenElement)

    def _arrived(self, *tokens: Token) -> None:
        for t in tokens:
            self.arrival[t.id] = next(self.arrivals)

    def tokens(self) -> list[Token]:
        held = super().tokens()
        if self.only is not None:
            held = [t for t in held if t.id in self.only]
        return sorted(held, key=lambda t: (t.value.minor, self.arrival[t.id]))

    def balance(self, currency: str = "SEK") -> Money:
        if self.only is None:
            return super().balance(currency)
        return sum((t.value for t in self.tokens()), Money.zero(currency))

    def store(self, token: Token) -> History:
        history = super().store(token)
        self._arrived(token)
        return history

    def split(self, token_id: bytes, amount: Money) -> tuple[Token, Token]:
        first, second = super().split(token_id, amount)
        self._arrived(first, second)
        return first, second

    def merge(self, token_ids: Iterable[bytes]) -> Token:
        child = super().merge(token_ids)
        self._arrived(child)
        return child


class BrokenElement(ArrivalElement, BrokenSignOnceElement):
    """SIMULATED HARDWARE BREAK (as in the token demo): SignOnce signs and keeps the key. The
    attacker also keeps copies of the tokens the element held when it was broken, and its
    firmware pays with those copies (``only``) when it double-spends."""

    copies: tuple[Token, ...]


def adopt(element: TokenElement) -> ArrivalElement:
    """Make a provisioned element list equal-valued tokens by arrival."""
    element.__class__ = ArrivalElement
    assert isinstance(element, ArrivalElement)
    element.arrival, element.arrivals, element.only = {}, itertools.count(), None
    element._arrived(*TokenElement.tokens(element))
    return element


def break_element(element: ArrivalElement) -> BrokenElement:
    """The attack: SignOnce no longer destroys keys; the tokens held now are copied."""
    element.__class__ = BrokenElement
    assert isinstance(element, BrokenElement)
    element.copies = tuple(element.tokens())
    return element


def restore_copies(element: BrokenElement) -> None:
    """Take back every copy the element no longer holds: its key survived the signature."""
    for copy in element.copies:
        if not element.holds(copy.id):
            element.store(copy)
