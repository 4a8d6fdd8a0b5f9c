"""Every attack of docs/threats.md that the suite plays, by name: what it is, which scheme it
attacks, how to play it in process, and whether it can be played over HTTP against a running
network (and if not, why not)."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from offpay.attacks import (
    broken_cards,
    clones,
    concurrency,
    counterfeits,
    faults,
    forgeries,
    held_back,
    intermediaries,
    lost_answers,
    relays,
    replays,
    revoked,
    settlement_requests,
    tokens,
    unattended,
)
from offpay.attacks.checked import Checked, fresh_network
from offpay.attacks.play import LocalIncidents, Play
from offpay.attacks.report import AttackReport
from offpay.errors import OffpayError
from offpay.sim.liquidity import SimClock

BALANCE = "balance"
TOKENS = "tokens"

# Why an attack cannot be played over HTTP: it needs a power the served network does not give
# a client, whatever the attacker does on its own side of the wire.
NEEDS_ENGINE_KEY = "it signs with an intermediary's engine key, which never leaves its service"
NEEDS_LEDGER = "it writes into an intermediary's ledger, which only the service opens"
NEEDS_CLOCK = "it moves the network's clock past the blocked window; services run on real time"
NEEDS_BLOCK = "it blocks a device at its intermediary; the back office offers no route to that"
NEEDS_HANDLE = "it signs requests with both engines' keys, which never leave their services"
NO_TOKENS = "the back office has no route to issue a token element: no client can hold one"
NEEDS_ROOT_KEY = "it has the central bank's root sign a certificate, which only the service can"
NEEDS_SERVICE_HOPS = (
    "it times bank-b's debit request to bank-a against the payer's session: a message between "
    "two services, which no client carries"
)
NEEDS_EVERY_HOP = (
    "it cuts, repeats and reorders every message of a flow, those between services included, "
    "which no client carries"
)
NEEDS_NOTARY_CUT = (
    "it cuts a request from an intermediary to the notary: a message between two services, "
    "which no client carries"
)


class UnknownAttack(OffpayError):
    """A name no attack of the suite has."""

    code = "attack.unknown"


class NotOverHttp(OffpayError):
    """An attack that cannot be played against a running network, or a network it cannot be
    played against."""

    code = "attack.not_over_http"


@dataclass(frozen=True)
class Attack:
    name: str
    scheme: str
    summary: str
    play: Callable[[Play], None]
    over_http: bool = False
    why_not_http: str = ""
    needs_clock: bool = False
    needs_files: bool = False  # engines on file-backed SQLite: safe for concurrent requests

    def setup(self) -> Checked:
        """A fresh two-bank network in this process for one play of this attack; its
        databases in a temporary folder that goes with the network, if it needs files."""
        if self.needs_clock:
            return fresh_network(clock=SimClock())
        if self.needs_files:
            folder = tempfile.mkdtemp(prefix="offpay-attack-")
            checked = fresh_network(url_for=lambda name: f"sqlite+pysqlite:///{folder}/{name}.db")
            weakref.finalize(checked.net, shutil.rmtree, folder, True)
            return checked
        return fresh_network()


ATTACKS: tuple[Attack, ...] = (
    Attack("replayed-top-up", BALANCE,
           "a relay replays a top-up's session and instruction after the card was defunded",
           replays.replayed_top_up, over_http=True),
    Attack("replayed-reset", BALANCE,
           "a relay replays a terminal's reset and a card's sync instruction to wipe payments",
           replays.replayed_reset, over_http=True),
    Attack("stale-session", BALANCE,
           "a relay holds a top-up session back and delivers it after a later session",
           held_back.session_delivered_late, over_http=True),
    Attack("payment-never-reached-shop", BALANCE,
           "a payment lost on its way to the shop, which declines; it turns up afterwards",
           held_back.payment_that_never_reached_the_shop, over_http=True),
    Attack("forged-instruction", BALANCE,
           "balance instructions signed by anyone but the card's own intermediary",
           forgeries.forged_balance_instruction, why_not_http=NEEDS_ENGINE_KEY),
    Attack("instruction-to-another-card", BALANCE,
           "another card's top-up instruction delivered to, or re-addressed to, this card",
           forgeries.instruction_to_another_card, over_http=True),
    Attack("altered-amount", BALANCE,
           "a relay changes the amount of requests and payments, at a shop and person to person",
           forgeries.altered_amount, over_http=True),
    Attack("forged-terminal-request", BALANCE,
           "a PoS app forges its terminal's payment request",
           forgeries.forged_terminal_request, why_not_http=NEEDS_ENGINE_KEY),
    Attack("impostor-terminal", BALANCE,
           "payees certified by a look-alike PKI, by the root alone, or without their key",
           forgeries.impostor_terminal, why_not_http=NEEDS_ROOT_KEY),
    Attack("relay-swapping-payee", BALANCE,
           "a relay delivers a payment to another payee or substitutes another payee's request",
           relays.relay_swapping_the_payee, over_http=True),
    Attack("live-request-substitution", BALANCE,
           "a relay brings back a live request of another payee; the people compare codes",
           relays.live_request_of_another_payee, over_http=True),
    Attack("cloned-card", BALANCE,
           "a cloned card spends the same money at two terminals",
           broken_cards.cloned_card, over_http=True),
    Attack("rolled-back-card", BALANCE,
           "a card's saved state written back after a payment and a sync, then spent again",
           broken_cards.rolled_back_card, over_http=True),
    Attack("rolled-back-before-defund", BALANCE,
           "a card's state from before a defund written back and spent offline",
           broken_cards.rolled_back_before_a_defund, over_http=True),
    Attack("counterfeit-upload", BALANCE,
           "a broken card uploads another card's payment with an altered amount",
           forgeries.counterfeit_upload, over_http=True),
    Attack("memory-copy-written-back", BALANCE,
           "a copy of a card's and a terminal's sealed memory written back after spending",
           held_back.memory_copy_written_back, over_http=True),
    Attack("pin-brute-force", BALANCE,
           "a thief guesses the PIN of a stolen card",
           broken_cards.pin_brute_force, over_http=True),
    Attack("revoked-card", BALANCE,
           "a blocked and revoked card goes on paying, online and offline",
           revoked.revoked_card_paying, why_not_http=NEEDS_CLOCK, needs_clock=True),
    Attack("revoked-terminal", BALANCE,
           "a stolen, blocked terminal goes on charging and synchronising",
           revoked.revoked_terminal_receiving, why_not_http=NEEDS_BLOCK),
    Attack("forged-interbank-request", BALANCE,
           "forged debit and credit requests between intermediaries",
           intermediaries.forged_interbank_request, why_not_http=NEEDS_HANDLE),
    Attack("unbacked-card-balance", BALANCE,
           "an intermediary loads a card beyond its shadow wallet, then makes the money up",
           intermediaries.intermediary_beyond_the_shadow_wallet, why_not_http=NEEDS_LEDGER),
    Attack("clone-paid-before-sync", BALANCE,
           "a clone spends the counter the genuine card then takes for its sync",
           clones.clone_paid_before_the_genuine_sync, over_http=True),
    Attack("queued-double-spend", BALANCE,
           "a clone's copy arrives while the card's first copy waits in the liquidity queue",
           clones.double_spend_first_copy_queued, over_http=True),
    Attack("lost-instruction", BALANCE,
           "an instruction lost by the relay, then a session refused or cut in settlement",
           lost_answers.failed_session_after_a_lost_instruction, why_not_http=NEEDS_NOTARY_CUT),
    Attack("card-left-after-pin", BALANCE,
           "a card pulled out after its PIN is presented by somebody else",
           unattended.card_left_after_its_pin, over_http=True),
    Attack("concurrent-sync", BALANCE,
           "payer and payee synchronise at once at their two intermediaries, 20 times",
           concurrency.both_parties_syncing_concurrently, why_not_http=NEEDS_SERVICE_HOPS,
           needs_files=True),
    Attack("forged-batch-request", BALANCE,
           "forged and replayed debit, credit and notarise batches; a clone's id; a racing sync",
           settlement_requests.forged_batch_request, why_not_http=NEEDS_HANDLE),
    Attack("forged-refund-request", BALANCE,
           "a refund request replayed, and one the payer's own intermediary signed",
           settlement_requests.forged_refund_request, why_not_http=NEEDS_ENGINE_KEY),
    Attack("transport-faults", BALANCE,
           "every message of every flow cut, duplicated or reordered, then retried",
           faults.transport_faults, why_not_http=NEEDS_EVERY_HOP),
    Attack("token-double-spend", TOKENS,
           "a broken element pays the same token to two people; the second deposit is refused",
           tokens.token_double_spend, why_not_http=NO_TOKENS),
    Attack("token-double-spend-merged", TOKENS,
           "both branches of a double spend merged into one token; every verifier refuses it",
           tokens.token_double_spend_in_one_history, why_not_http=NO_TOKENS),
    Attack("token-counterfeit", TOKENS,
           f"{len(counterfeits.COUNTERFEITS)} kinds of counterfeit token, offered and deposited",
           counterfeits.token_counterfeit, why_not_http=NO_TOKENS),
    Attack("token-not-signed-once", TOKENS,
           "a sender proves a transfer with a key other than the token's owner key",
           tokens.token_not_signed_once, why_not_http=NO_TOKENS),
)  # fmt: skip

BY_NAME = {attack.name: attack for attack in ATTACKS}


def find(name: str) -> Attack:
    """The attack called ``name``; :class:`UnknownAttack` naming the valid ones otherwise."""
    attack = BY_NAME.get(name)
    if attack is None:
        raise UnknownAttack(f"no attack named {name!r}; valid: {', '.join(BY_NAME)}, all")
    return attack


def play_in_process(attack: Attack | str, checked: Checked | None = None) -> AttackReport:
    """Play ``attack`` on ``checked``'s network (a fresh one if omitted): the tests pass their
    own, so that they can assert on the network afterwards."""
    attack = find(attack) if isinstance(attack, str) else attack
    checked = checked if checked is not None else attack.setup()
    play = Play(checked, attack.name, attack.scheme, attack.summary, LocalIncidents(checked.net))
    attack.play(play)
    return play.report()
