"""The attack suite (issue 3, point 6): one test per attack, named after it.

Threat model: cards and terminal secure modules are tamper-resistant but a well-funded attacker
can break or clone one (the tests play that by copying a device's key and state); phones, PoS
apps and the network are hostile and may drop, replay, reorder, delay or alter any message;
intermediaries are trusted but audited by the central bank.

Each attack is played by the same code `offpay attack NAME` runs (``offpay.attacks``), on the
test's own network: the play itself insists, step by step, that each attempt is refused with
its stable code and changes nothing, or is detected and attributed (``DefenceFailed``
otherwise), and the ``checked`` fixture asserts issued == held, and that each intermediary's
wallets agree with the central bank's record, after every step. The tests then assert what the
report says and where the money ended up. docs/threats.md lists every attack, its outcome,
the command that plays it and the test that shows it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ISSUED_PER_BANK, Checked
from offpay.attacks.broken_cards import cloned_card
from offpay.attacks.checked import fresh_network
from offpay.attacks.concurrency import ROUNDS
from offpay.attacks.play import LocalIncidents, Play
from offpay.attacks.registry import play_in_process
from offpay.attacks.report import AttackReport, FindingKind, Outcome
from offpay.attacks.tools import (
    altered,
    begin,
    broken_card_key,
    client,
    payload,
    payment_to_shop,
    session_and_answer,
    terminal_upload_and_reset,
)
from offpay.attacks.tools import funded as funded_card
from offpay.bank.engine import Intermediary
from offpay.device.card import Card
from offpay.device.tamper import clone_card
from offpay.sim.liquidity import SimClock
from offpay.sim.network import OfflineNetwork, User

SEK = 100  # minor units per krona

# The attacker's tools, for the tests of other modules that play attacks of their own.
__all__ = [
    "altered",
    "anomalies_of",
    "begin",
    "broken_card_key",
    "client",
    "clone_of",
    "funded",
    "payload",
    "payment_to_shop",
    "session_and_answer",
    "terminal_upload_and_reset",
]


def funded(
    net: OfflineNetwork, checked: Checked, name: str, bank: str, minor: int, *, spare: int = 0
) -> User:
    """A user whose card was topped up with ``minor``, keeping ``spare`` in the online wallet."""
    assert checked.net is net
    return funded_card(checked, name, bank, minor, spare=spare)


def clone_of(card: Card) -> Card:
    """SIMULATED HARDWARE BREAK: a second card with the same key and a copy of the state."""
    return clone_card(card)


def anomalies_of(bank: Intermediary, device: str) -> list[str]:
    """The kinds of anomaly ``bank`` recorded against ``device``."""
    return [kind for kind, who, _ in bank.anomalies() if who == device]


def refusals(report: AttackReport) -> list[tuple[str, str]]:
    """(party, code) of every refusal in ``report``, in order."""
    return [(f.party, f.code) for f in report.findings if f.kind is FindingKind.REFUSED]


def prevented(report: AttackReport, net: OfflineNetwork) -> None:
    """Every attempt refused, nothing detected because nothing got through, nothing lost."""
    assert report.outcome is Outcome.PREVENTED
    assert report.losses == () and report.loss == report.bound == net.money(0)
    assert report.conserved and report.where == "in-process"


# --- replays ----------------------------------------------------------------------------------


def test_replayed_top_up(net: OfflineNetwork, checked: Checked) -> None:
    """The relay replays a top-up's session and instruction after the card was defunded."""
    report = play_in_process("replayed-top-up", checked)
    alice = net.users["Alice"]
    prevented(report, net)
    assert refusals(report) == [("Alice's card", "wire.replay")] * 3
    assert (alice.online, alice.shadow, alice.card_balance) == (
        net.money(500 * SEK),
        net.money(0),
        net.money(0),
    )


def test_replayed_reset(net: OfflineNetwork, checked: Checked) -> None:
    """A terminal's reset and a card's sync instruction replayed: each payment is paid once."""
    report = play_in_process("replayed-reset", checked)
    shop, alice, carol = net.merchants["Shop"], net.users["Alice"], net.users["Carol"]
    prevented(report, net)
    assert refusals(report) == [
        ("the shop's module", "wire.replay"),
        ("the shop's module", "wire.replay"),
        ("Alice's card", "wire.replay"),
    ]
    assert shop.wallet == net.money(65 * SEK)
    assert (alice.shadow, alice.card_balance) == (net.money(55 * SEK), net.money(55 * SEK))
    assert carol.shadow == net.money(80 * SEK)


# --- instructions to cards --------------------------------------------------------------------


def test_forged_balance_instruction(net: OfflineNetwork, checked: Checked) -> None:
    """Instructions the card's own intermediary did not sign are refused; its own applies."""
    report = play_in_process("forged-instruction", checked)
    alice = net.users["Alice"]
    prevented(report, net)
    assert [code for _, code in refusals(report)] == ["crypto.bad_signature"] * 2 + [
        "crypto.bad_certificate"
    ] * 3
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)


def test_instruction_addressed_to_another_card(net: OfflineNetwork, checked: Checked) -> None:
    """Carol's instruction delivered to, or re-addressed to, Alice's card is refused."""
    report = play_in_process("instruction-to-another-card", checked)
    alice, carol = net.users["Alice"], net.users["Carol"]
    prevented(report, net)
    assert refusals(report) == [
        ("Alice's card", "wire.wrong_receiver"),
        ("Alice's card", "crypto.bad_signature"),
    ]
    assert alice.card_balance == net.money(10 * SEK)
    assert carol.card_balance == carol.shadow == net.money(500 * SEK)


# --- offline payments -------------------------------------------------------------------------


def test_altered_amount(net: OfflineNetwork, checked: Checked) -> None:
    """Every altered amount breaks a signature, every spoiled sealed payment fails to open; the
    genuine messages settle once."""
    report = play_in_process("altered-amount", checked)
    shop, alice, bob = net.merchants["Shop"], net.users["Alice"], net.users["Bob"]
    prevented(report, net)
    assert refusals(report) == [
        ("Alice's card", "crypto.bad_signature"),
        ("the shop's module", "crypto.bad_seal"),
        ("the shop's module", "crypto.bad_signature"),
        ("Alice's card", "crypto.bad_signature"),
        ("Bob's card", "crypto.bad_seal"),
        ("Bob's card", "crypto.bad_signature"),
    ]
    assert (shop.wallet, bob.shadow) == (net.money(30 * SEK), net.money(20 * SEK))
    assert alice.shadow == alice.card_balance == net.money(50 * SEK)


def test_forged_terminal_request(net: OfflineNetwork, checked: Checked) -> None:
    """The PoS app's forged requests are refused by the card; the module's own is paid."""
    report = play_in_process("forged-terminal-request", checked)
    prevented(report, net)
    assert [code for _, code in refusals(report)] == [
        "crypto.bad_signature",
        "crypto.bad_signature",
        "crypto.bad_certificate",
    ]
    assert net.merchants["Shop"].wallet == net.money(10 * SEK)
    assert net.users["Alice"].shadow == net.money(90 * SEK)


def test_payment_to_an_impostor_terminal(net: OfflineNetwork, checked: Checked) -> None:
    """The card pays only payees an intermediary under the root certified, holding the key."""
    report = play_in_process("impostor-terminal", checked)
    prevented(report, net)
    assert [code for _, code in refusals(report)] == ["crypto.bad_certificate"] * 3 + [
        "crypto.bad_signature"
    ]
    assert net.users["Alice"].card_balance == net.money(60 * SEK)


def test_hostile_relay_swapping_the_payee(net: OfflineNetwork, checked: Checked) -> None:
    """Payments delivered to another payee, or requests swapped: Mallory gets nothing."""
    report = play_in_process("relay-swapping-payee", checked)
    users, shops = net.users, net.merchants
    prevented(report, net)
    assert refusals(report) == [
        ("Alice's card", "crypto.bad_signature"),
        ("Alice's card", "wire.replay"),
        ("Alice's card", "wire.wrong_receiver"),
        ("Mallory's card", "wire.wrong_receiver"),
        ("the other shop's module", "wire.wrong_receiver"),
    ]
    assert (users["Bob"].shadow, shops["Shop"].wallet) == (net.money(20 * SEK), net.money(30 * SEK))
    assert (users["Mallory"].shadow, shops["Other shop"].wallet) == (net.money(0), net.money(0))
    assert users["Alice"].shadow == net.money(50 * SEK)


def test_hostile_relay_substituting_a_live_request_of_another_payee(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Alice's phone refuses Mallory's live request when the codes differ."""
    report = play_in_process("live-request-substitution", checked)
    prevented(report, net)
    assert refusals(report) == [("Alice's phone", "payment.code_mismatch")]
    users = net.users
    assert (users["Bob"].shadow, users["Mallory"].shadow, users["Alice"].shadow) == (
        net.money(20 * SEK),
        net.money(0),
        net.money(80 * SEK),
    )


# --- broken and cloned cards ------------------------------------------------------------------


def detected_against(report: AttackReport, bank: str) -> list[str]:
    """The anomaly kinds and blocks ``bank`` recorded during the play, in order."""
    return [
        f.code for f in report.findings if f.kind is not FindingKind.REFUSED and f.party == bank
    ]


def test_cloned_card_at_two_terminals(net: OfflineNetwork, checked: Checked) -> None:
    """The clone's payment is refused, the card blocked and revoked, the loss bounded."""
    report = play_in_process("cloned-card", checked)
    alice, shop, other_shop = net.users["Alice"], net.merchants["Shop"], net.merchants["Other shop"]
    assert report.outcome is Outcome.DETECTED
    assert detected_against(report, "bank-a") == ["conflicting_payment", "blocked"]
    assert refusals(report) == [("bank-a", "crypto.revoked")] * 2
    assert shop.wallet == net.money(100 * SEK)
    assert other_shop.wallet == net.money(0)
    assert alice.shadow == net.money(0)
    assert alice.bank.device(alice.card_id).status == "blocked"
    assert alice.card_id in net.central.revoked_devices()
    assert [(loss.device, loss.amount) for loss in alice.bank.losses()] == [
        (alice.card_id, net.money(100 * SEK))
    ]
    policy = alice.card.state.policy
    assert report.loss == net.money(100 * SEK) and report.bound == policy.card_max_balance
    assert report.within_bound and report.conserved


def test_rolled_back_card(net: OfflineNetwork, checked: Checked) -> None:
    """The restored card is refused at its sync, blocked, revoked; nobody is paid twice."""
    report = play_in_process("rolled-back-card", checked)
    alice, shop, other_shop = net.users["Alice"], net.merchants["Shop"], net.merchants["Other shop"]
    assert report.outcome is Outcome.DETECTED
    assert refusals(report) == [("bank-a", "device.rolled_back")]
    assert detected_against(report, "bank-a") == ["rolled_back", "blocked", "conflicting_payment"]
    assert "rolled_back" in anomalies_of(alice.bank, alice.card_id)
    assert alice.bank.device(alice.card_id).status == "blocked"
    assert alice.card_id in net.central.revoked_devices()
    assert shop.wallet == net.money(100 * SEK)
    assert other_shop.wallet == net.money(0)
    assert alice.shadow == net.money(0)
    assert "conflicting_payment" in anomalies_of(alice.bank, alice.card_id)
    assert [loss.amount for loss in alice.bank.losses()] == [net.money(100 * SEK)]
    assert report.loss == net.money(100 * SEK) and report.within_bound


def test_rolled_back_card_restored_to_before_a_defund(
    net: OfflineNetwork, checked: Checked
) -> None:
    """A state from before a defund, spent offline: a rollback, blocked and revoked."""
    report = play_in_process("rolled-back-before-defund", checked)
    mallory, shop = net.users["Mallory"], net.merchants["Shop"]
    assert report.outcome is Outcome.DETECTED
    assert detected_against(report, "bank-a") == ["rolled_back", "blocked"]
    assert mallory.bank.device(mallory.card_id).status == "blocked"
    assert [loss.amount for loss in mallory.bank.losses()] == [net.money(100 * SEK)]
    assert mallory.card_id in net.central.revoked_devices()
    assert shop.wallet == net.money(0) and mallory.online == net.money(100 * SEK)
    assert report.loss == net.money(100 * SEK) and report.within_bound


def test_counterfeit_payment_uploaded_by_a_broken_card(
    net: OfflineNetwork, checked: Checked
) -> None:
    """The counterfeit entry settles nothing and blocks the card that signed it."""
    report = play_in_process("counterfeit-upload", checked)
    alice, mallory = net.users["Alice"], net.users["Mallory"]
    assert report.outcome is Outcome.DETECTED
    assert detected_against(report, "bank-a") == ["invalid_entry", "blocked"]
    assert refusals(report) == [("bank-a", "crypto.revoked")]
    assert mallory.bank.device(mallory.card_id).status == "blocked"
    assert mallory.card_id in net.central.revoked_devices()
    assert mallory.shadow == net.money(10 * SEK)
    assert alice.shadow == alice.card_balance == net.money(90 * SEK)
    assert report.loss == report.bound == net.money(0)


def test_pin_brute_force(net: OfflineNetwork, checked: Checked) -> None:
    """The third wrong guess blocks the PIN; then the right PIN is refused too."""
    report = play_in_process("pin-brute-force", checked)
    alice, shop = net.users["Alice"], net.merchants["Shop"]
    prevented(report, net)
    assert [code for _, code in refusals(report)] == ["pin.wrong", "pin.wrong"] + [
        "pin.blocked"
    ] * 5
    assert client(alice).status().pin_tries_left == 0
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)
    assert shop.wallet == net.money(0)


# --- revoked devices --------------------------------------------------------------------------


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def clocked(clock: SimClock) -> Checked:
    """A two-bank network on a clock the test moves by hand, checked like ``checked``."""
    network = OfflineNetwork(clock=clock)
    for name in network.banks:
        network.issue(name, ISSUED_PER_BANK)
    c = Checked(network)
    c.conserved()
    return c


def test_revoked_card_paying(clocked: Checked, clock: SimClock) -> None:
    """Devices that synchronised since refuse the revoked card; a late payment is refused."""
    net = clocked.net
    report = play_in_process("revoked-card", clocked)
    mallory, unsynced = net.users["Mallory"], net.merchants["Unsynced shop"]
    assert report.outcome is Outcome.DETECTED
    assert [code for _, code in refusals(report)] == ["crypto.revoked"] * 4
    assert detected_against(report, "bank-a") == ["late_payment"]
    assert unsynced.wallet == net.money(0)
    assert "late_payment" in anomalies_of(mallory.bank, mallory.card_id)
    assert (net.merchants["Shop"].wallet, net.users["Bob"].shadow) == (net.money(0), net.money(0))
    assert mallory.shadow + mallory.online == net.money(400 * SEK)  # she spent nothing


def test_revoked_terminal_receiving(net: OfflineNetwork, checked: Checked) -> None:
    """A card that synchronised since refuses the revoked terminal; its sync is refused."""
    report = play_in_process("revoked-terminal", checked)
    alice, shop = net.users["Alice"], net.merchants["Shop"]
    assert refusals(report) == [
        ("Alice's card (synchronised since)", "crypto.revoked"),
        ("bank-b", "crypto.revoked"),
    ]
    assert "blocked" in anomalies_of(shop.bank, shop.terminal_id)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)
    assert shop.wallet == net.money(0)


# --- between intermediaries -------------------------------------------------------------------


def test_both_parties_syncing_concurrently_through_two_intermediaries(tmp_path: Path) -> None:
    """Alice (bank-a) pays Bob (bank-b) offline; then, on two threads, her card synchronises at
    bank-a while his synchronises at bank-b, and bank-b's debit request reaches bank-a at the
    same instant as her session. Twenty times. Each payment is debited, notarised and credited
    exactly once, and money is conserved after every round.

    The engines use file-backed SQLite: with the default in-memory SQLite every engine has one
    connection shared by all threads, so concurrent requests interleave their transactions and
    this test fails in its first round (a step happens twice: money is lost or created)."""
    net = OfflineNetwork(url_for=lambda name: f"sqlite+pysqlite:///{tmp_path}/{name}.db")
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    checked = Checked(net)
    report = play_in_process("concurrent-sync", checked)
    assert report.outcome is Outcome.PREVENTED and report.findings == ()
    prevented(report, net)
    alice, bob = net.users["Alice"], net.users["Bob"]
    assert net.central.notarised_count() == ROUNDS
    assert alice.shadow == alice.card_balance == net.money(0)
    assert bob.shadow == bob.card_balance == net.money(ROUNDS * SEK)
    assert all(bank.in_transit() == net.money(0) for bank in net.banks.values())
    assert report.conservation_checks > 3 * ROUNDS


def test_a_card_left_after_its_pin(net: OfflineNetwork, checked: Checked) -> None:
    """A card pulled out after its PIN: the payment it was about to make is void, a new one
    needs the PIN again; the holder pays once."""
    report = play_in_process("card-left-after-pin", checked)
    prevented(report, net)
    assert refusals(report) == [("Alice's card", "wire.replay"), ("Alice's card", "pin.required")]
    alice, shop = net.users["Alice"], net.merchants["Shop"]
    assert alice.card_balance == alice.shadow == net.money(70 * SEK)
    assert shop.wallet == net.money(30 * SEK)


def test_forged_payment_request_between_intermediaries(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Forged debit and credit requests are refused and move nothing; the shop is paid once."""
    report = play_in_process("forged-interbank-request", checked)
    prevented(report, net)
    assert refusals(report) == [
        ("bank-a", "crypto.bad_certificate"),
        ("bank-a", "crypto.bad_certificate"),
        ("bank-a", "crypto.bad_signature"),
        ("bank-b", "crypto.bad_certificate"),
        ("bank-b", "crypto.bad_certificate"),
        ("bank-b", "bank.no_receipt"),
        ("bank-b", "wire.malformed"),
    ]
    assert net.merchants["Shop"].wallet == net.money(31 * SEK)
    alice = net.users["Alice"]
    assert alice.shadow == alice.card_balance == net.money(70 * SEK)


def test_intermediary_loading_a_card_beyond_its_shadow_wallet(
    net: OfflineNetwork, checked: Checked
) -> None:
    """An unbacked balance creates no money, and the audit names an intermediary that makes
    the money up in its ledger."""
    report = play_in_process("unbacked-card-balance", checked)
    alice, shop = net.users["Alice"], net.merchants["Shop"]
    assert detected_against(report, "bank-a") == ["shortfall"]
    assert [(f.party, f.code) for f in report.findings if f.party == "central-bank"] == [
        ("central-bank", "audit.conservation")
    ]
    assert alice.card_balance == net.money(500 * SEK)
    assert shop.wallet == net.money(0)
    assert alice.shadow == net.money(100 * SEK)
    assert "shortfall" in anomalies_of(alice.bank, alice.card_id)
    assert [p.amount for p in shop.bank.pending(shop.terminal_id)] == [net.money(1_500 * SEK)]
    assert net.holdings_mismatches() == [] and report.conserved


@settings(max_examples=15, deadline=None)
@given(
    balance=st.integers(min_value=1, max_value=3_000 * SEK),
    spent_share=st.fractions(min_value=0, max_value=1),
    copied_share=st.fractions(min_value=0, max_value=1),
)
def test_a_clone_costs_what_it_spent_and_never_more_than_the_card_limit(
    balance: int, spent_share: Fraction, copied_share: Fraction
) -> None:
    """Whatever the card holds (up to its limit) and whatever the card and its clone spend
    from it: the shop that synchronises first is paid, the clone's payment is refused, the loss
    recorded is exactly what the clone spent, within the card balance limit, and money is
    conserved at every step."""
    spent = max(1, int(balance * spent_share))
    copied = max(1, int(balance * copied_share))
    checked = Checked(fresh_network().net)
    net = checked.net
    play = Play(checked, "cloned-card", "balance", "", LocalIncidents(net))
    cloned_card(play, balance=balance, spent=spent, copied=copied)
    report = play.report()
    alice = net.users["Alice"]
    assert net.merchants["Shop"].wallet == net.money(spent)
    assert net.merchants["Other shop"].wallet == net.money(0)
    assert alice.shadow == net.money(balance - spent)
    assert report.loss == net.money(copied)
    assert report.bound == alice.card.state.policy.card_max_balance
    assert report.within_bound and report.conserved
