"""What a token's history shows its receiver, and renewal as the privacy reset (issue 19,
point 4).

A token carries its ancestors, each with its ownership key and the endorsement that names the
secure element that held it, and every transition's siblings (the change a payer kept): a
receiver sees a pseudonym and a key for every earlier hop. A renewed token is freshly minted,
with no ancestors: its next receiver sees no earlier owner. :func:`measure` plays a token
population hop by hop through real elements and wallet apps and counts, at every receipt, the
earlier owners the receiver sees.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass

from offpay.errors import Refused
from offpay.money import Money
from offpay.sim.network import OfflineNetwork
from offpay.tokens.model import Token
from offpay.tokens.transfer import transfer_offline


@dataclass(frozen=True)
class Exposure:
    """What one token shows whoever receives it."""

    ancestors: int  # distinct earlier tokens in its history
    owner_keys: frozenset[bytes]  # earlier ownership keys, siblings' included
    elements: frozenset[str]  # earlier holders' element pseudonyms, the receiver's own excepted
    payers: frozenset[str]  # who held its parents: the payer, known to the receiver anyway

    @property
    def earlier_owners(self) -> int:
        """Holders before the payer: what the history adds to what the payment shows."""
        return len(self.elements - self.payers)


def exposure(token: Token) -> Exposure:
    """The earlier owners ``token``'s receiver (its current owner) can read from it."""
    me = token.endorsement.element
    keys: set[bytes] = set()
    elements: set[str] = set()
    seen: set[bytes] = set()
    stack = [token]
    while stack:
        t = stack.pop()
        for sibling in t.siblings:
            keys.add(sibling.owner)
            elements.add(sibling.endorsement.element)
        for parent in t.ancestors:
            if parent.id in seen:
                continue  # a merge reaches one ancestor twice
            seen.add(parent.id)
            keys.add(parent.owner)
            elements.add(parent.endorsement.element)
            stack.append(parent)
    keys.discard(token.owner)
    elements.discard(me)
    payers = frozenset(p.endorsement.element for p in token.ancestors) - {me}
    return Exposure(len(seen), frozenset(keys), frozenset(elements), payers)


@dataclass(frozen=True)
class Measurement:
    """Earlier owners seen at each receipt of a token population's offline hops."""

    tokens: int
    hops: int
    elements: int
    renew_after: int | None  # a holder renews a token with more ancestors (None: never)
    seen: tuple[int, ...]  # earlier owners (before the payer) seen, one entry per receipt
    renewals: int

    @property
    def distribution(self) -> dict[int, int]:
        return dict(sorted(Counter(self.seen).items()))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seen) if self.seen else 0.0

    @property
    def most(self) -> int:
        return max(self.seen, default=0)


def check_parameters(tokens: int, hops: int, elements: int, renew_after: int | None) -> None:
    """A typed refusal for a population that cannot be played."""
    if tokens < 1 or hops < 1:
        raise Refused("tokens and hops must be at least 1", code="privacy.bad_population")
    if elements < 2:
        raise Refused("a transfer needs at least 2 elements", code="privacy.bad_population")
    if renew_after is not None and renew_after < 0:
        raise Refused("renew-after must be 0 or more", code="privacy.bad_population")


def measure(
    tokens: int,
    hops: int,
    elements: int,
    renew_after: int | None,
    *,
    seed: int = 0,
    minor: int = 100,
) -> Measurement:
    """Withdraw ``tokens`` tokens of ``minor`` units, each from a random holder, and pass each
    one ``hops`` times offline to a random other holder, through the real protocol. With
    ``renew_after``, a holder goes online before each payment and renews a token whose history
    is longer (what the wallet app does at every online moment): the most favourable case for
    renewal; a holder offline for longer passes the longer history on."""
    check_parameters(tokens, hops, elements, renew_after)
    rng = random.Random(seed)
    net = OfflineNetwork()
    for bank in net.banks:
        net.issue(bank, elements * tokens * minor)
    banks = list(net.banks)
    users = [
        net.add_token_user(f"holder-{i}", banks[i % len(banks)], online=tokens * minor)
        for i in range(elements)
    ]
    for user in users:
        user.app.max_ancestry = renew_after if renew_after is not None else hops + 1
    value = Money(minor, net.currency)
    seen: list[int] = []
    renewals = 0
    for _ in range(tokens):
        holder = rng.randrange(elements)
        token = users[holder].app.withdraw(value)
        for _ in range(hops):
            if renew_after is not None:
                fresh = users[holder].app.renew_long()
                renewals += len(fresh)
                token = next((t for t in fresh if t.value == value), token)
            payee = rng.choice([i for i in range(elements) if i != holder])
            token = transfer_offline(users[holder].element, users[payee].element, value)
            seen.append(exposure(token).earlier_owners)
            holder = payee
        users[holder].app.deposit(value)
    net.check_conservation()
    return Measurement(tokens, hops, elements, renew_after, tuple(seen), renewals)
