"""The cost of one offline payment through the full protocol, in process.

Card→terminal (report §3.5): the PoS app asks the terminal's module for a signed request, the
card verifies it and signs the payment, the module verifies the card's signature, finds its own
request in the payment by the digest it kept (a device does not verify its own signature) and
seals the record. Person to person (§3.6): the payee's card signs a request, the payer's card
verifies it and pays, the payee's card verifies the payment, finds its own request the same way
and credits. Each signature is thus made once and verified once by the one party that must
trust it: 2 signatures and 2 verifications a payment, which the count below shows. Every APDU
is encoded and decoded on the way.

Only the payments are timed, by this process's CPU time (a rate per core, which other work
on a shared machine does not lower; the wall-clock rate is kept beside it). A signed policy
raises the limits (8 offline transactions per card, 250 per terminal) and there are enough
cards that no sync, which would settle, falls inside the run. The crypto ceiling of a flow
is the rate at which one core could do just the crypto the protocol needs (counted, see
:mod:`offpay.bench.instrument`): the signatures the flow makes and verifies and, since the
payment travels sealed to its payee (issue 19), the payee's HPKE key for the request, the
sealing of the payment and its opening. The ceiling of the signatures alone, the earlier
definition, is kept beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from offpay.bench.ceilings import HpkeRate, SignatureRate
from offpay.bench.instrument import CryptoCount, count_crypto
from offpay.crypto.keys import Algorithm
from offpay.money import Money
from offpay.sim.network import Merchant, OfflineNetwork, User

Say = Callable[[str], None]
AMOUNT_MINOR = 100
CARD_LIMIT = 8  # offline transactions per card: near the pilot's 5, so logs stay as short
TERMINAL_LIMIT = 250
COUNTED = 12  # payments whose signatures are counted, after the warm-up round


def _network(algorithm: Algorithm, cards: int, shops: int) -> tuple[list[User], list[Merchant]]:
    """Cards and shops of both intermediaries, under a policy that lets the whole run pass
    without a sync: a sync settles, and settlement is not what is timed here."""
    from offpay.bench.settlement import raise_limits

    net = OfflineNetwork(algorithm=algorithm)
    raise_limits(net, CARD_LIMIT, TERMINAL_LIMIT, AMOUNT_MINOR)
    for bank in net.banks:
        net.issue(bank, 10_000_000_00)
    banks = list(net.banks)
    users = []
    for i in range(cards):
        user = net.add_user(f"user-{i}", banks[i % 2], online=1_000_00)
        user.phone.top_up(user.pin, net.money(1_000_00))
        users.append(user)
    merchants = [net.add_merchant(f"shop-{i}", banks[i % 2]) for i in range(shops)]
    return users, merchants


def crypto_ceiling(
    count: CryptoCount, flows: int, rate: SignatureRate, hpke: HpkeRate | None = None
) -> float:
    """Flows per second one core could do if it did nothing but the flow's signatures and,
    given ``hpke``, its HPKE operations (each a term of its own, at its own measured rate)."""
    seconds = count.total_signs / rate.signs_per_s + count.total_verifies / rate.verifies_per_s
    if hpke is not None:
        seconds += (
            count.hpke_keys / hpke.keys_per_s
            + count.hpke_seals / hpke.seals_per_s
            + count.hpke_opens / hpke.opens_per_s
        )
    return flows / seconds if seconds > 0 else float("inf")


def sealed_bytes(count: CryptoCount) -> int:
    """The mean size of what the flow sealed to its payees (what :func:`hpke_rate` seals)."""
    return count.hpke_sealed_bytes // count.hpke_seals if count.hpke_seals else 0


def card_to_terminal(algorithm: Algorithm, payments: int, say: Say) -> dict[str, Any]:
    """Each card always pays the same shop, so after its first payment both sides know each
    other's certificates, as a regular customer's card and shop do."""
    cards = max(COUNTED, -(-(payments + COUNTED) // (CARD_LIMIT - 2)))
    shops = max(2, -(-cards // 8))
    users, merchants = _network(algorithm, cards, shops)
    amount = Money(AMOUNT_MINOR, merchants[0].module.state.policy.currency)

    def pay(k: int) -> None:
        user = users[k % cards]
        merchants[(k % cards) % shops].pos.charge(user.card.process, user.pin, amount)

    return _time(cards, payments, pay, say)


def person_to_person(algorithm: Algorithm, payments: int, say: Say) -> dict[str, Any]:
    """A ring: every card pays the next one, so every card pays and receives once a round."""
    cards = max(COUNTED, -(-2 * (payments + COUNTED) // (CARD_LIMIT - 4)))
    users, _ = _network(algorithm, cards, 0)
    amount = Money(AMOUNT_MINOR, users[0].card.state.policy.currency)

    def pay(k: int) -> None:
        payer, payee = users[k % cards], users[(k + 1) % cards]
        request = payee.phone.ask(payer.phone.show_identity(), amount)
        payee.phone.accept(payee.pin, payer.phone.pay(payer.pin, request))

    return _time(cards, payments, pay, say)


def _time(cards: int, payments: int, pay: Callable[[int], None], say: Say) -> dict[str, Any]:
    """A warm-up round (one payment per card), then :data:`COUNTED` payments whose signatures
    are counted, then ``payments`` timed payments."""
    for k in range(cards):
        pay(k)
    count = CryptoCount()
    for k in range(cards, cards + COUNTED):
        with count_crypto() as one:
            pay(k)
        count.add(one)
    first = cards + COUNTED
    last_say = wall_start = time.perf_counter()
    cpu_start = time.process_time()
    for k in range(first, first + payments):
        pay(k)
        if time.perf_counter() - last_say > 10:
            last_say = time.perf_counter()
            say(f"  {k - first:,}/{payments:,} payments")
    cpu = time.process_time() - cpu_start
    timed = time.perf_counter() - wall_start
    return {
        "payments": payments,
        "seconds": round(timed, 4),
        "cpu_seconds": round(cpu, 4),
        # per core: CPU time, like the ceiling it is compared with
        "payments_per_s": round(payments / cpu, 1) if cpu > 0 else None,
        "wall_payments_per_s": round(payments / timed, 1),
        "us_per_payment": round(1e6 * cpu / payments, 1),
        "signatures_made": round(count.total_signs / COUNTED, 2),
        "signatures_verified": round(count.total_verifies / COUNTED, 2),
        "hpke_keys": round(count.hpke_keys / COUNTED, 2),
        "hpke_seals": round(count.hpke_seals / COUNTED, 2),
        "hpke_opens": round(count.hpke_opens / COUNTED, 2),
        "sealed_bytes": sealed_bytes(count),
        "_count": count,
        "_flows": COUNTED,
    }
