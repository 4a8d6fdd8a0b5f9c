"""A SIMULATED HARDWARE BREAK: what an attacker who broke a card's secure element could do.

The threat model (docs/threats.md) grants a well-funded attacker the power to break or clone a
tamper-resistant device. The attack tests and the population simulator play that power through
this module, and through nothing else, so that no simulator reaches into a card's private
parts. Nothing in the protocol calls it: an honest card offers none of this.

* :func:`clone_card`: a second card with the victim card's key, certificate chain, trust store
  and a copy of its state (balance, counter, log), as if the key and memory were extracted and
  loaded into another secure element.
* :func:`extracted_key`: the card's key and certificate chain, read out of the broken element, to
  sign whatever the attacker likes in the card's name.
* :func:`read_state` and :func:`write_back`: the attacker saves a card's state and later writes
  it back *past* the anti-rollback (the hardware's monotonic counter is reset as well), so the
  card runs on its old balance and counter again. Writing back the sealed memory alone is what
  :class:`~offpay.device.memory.SealedMemory` refuses (``device.rolled_back``); this is the
  stronger break that makes the card accept it.
"""

from __future__ import annotations

import copy

from offpay.crypto.pki import Credential
from offpay.device.card import Card, CardState


def clone_card(card: Card) -> Card:
    """A twin of ``card``: the same key and chain, a copy of its trust store and its state."""
    twin = Card(card._signer)
    twin._trust = copy.deepcopy(card._trust)
    twin._state = card._state  # sealed into the twin's own memory under its own counter
    return twin


def extracted_key(card: Card) -> Credential:
    """The card's signing key and certificate chain, as the attacker read them out."""
    return Credential(card._signer, card.state.chain)


def read_state(card: Card) -> CardState:
    """The card's state as its memory holds it now (immutable: it cannot change later)."""
    return card.state


def write_back(card: Card, state: CardState) -> None:
    """Write ``state`` back into ``card`` past its anti-rollback: the card is powered up again
    and runs on the old balance, counter and log from now on."""
    card._state = state  # a fresh write under the card's counter: the card accepts it
    card.reset()
