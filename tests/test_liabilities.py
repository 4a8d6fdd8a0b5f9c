"""Issue 18, point 4: proof of liabilities. The Merkle sum tree's properties for all inputs
(Hypothesis): every leaf's proof verifies, any change to a leaf amount or to a sum or hash in a
proof fails, the root's total is the leaves' sum. An intermediary publishes a signed
commitment whose total equals the holdings the central bank states (or publishes nothing); a
customer's phone verifies its inclusion, in process and over HTTP; the auditor's check names an
intermediary whose published total is not the central bank's record."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from conftest import client_of, serve_party
from offpay.audit.liabilities import check_published_totals
from offpay.cli import app as cli
from offpay.errors import OffpayError
from offpay.liabilities.messages import HoldingsStatement, LiabilitiesCommitment
from offpay.liabilities.publish import ask_holdings, commitment, proof_for, publish
from offpay.liabilities.tree import (
    MAX_SUM,
    AmountError,
    Balances,
    Node,
    ProofError,
    build,
    leaf,
    verify,
)
from offpay.liabilities.verify import CommitmentError, check_inclusion, open_commitment
from offpay.service.app import create_app
from offpay.service.datadir import CENTRAL, init_network
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import build as build_service
from offpay.sim.network import OfflineNetwork
from offpay.store import schema
from offpay.wire.envelope import Signed, payload_of, sign

AMOUNT = st.integers(0, 10**12)
BALANCES = st.builds(Balances, AMOUNT, AMOUNT, AMOUNT)
CUSTOMERS = st.lists(BALANCES, min_size=1, max_size=33)


def _tree(balances: list[Balances]) -> tuple[list[tuple[str, bytes, Balances]], object]:
    leaves = [(f"bank-a/c{i}", secrets.token_bytes(32), b) for i, b in enumerate(balances)]
    return leaves, build([leaf(c, s, b) for c, s, b in leaves])


# -- the tree -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(CUSTOMERS)
def test_every_leaf_s_proof_verifies_and_the_root_totals_the_leaves(
    balances: list[Balances],
) -> None:
    leaves, tree = _tree(balances)
    assert tree.root.sum == sum(b.total for b in balances)  # type: ignore[attr-defined]
    for position, (customer, salt, mine) in enumerate(leaves):
        path = tree.path(position)  # type: ignore[attr-defined]
        verify(tree.root, len(leaves), position, customer, salt, mine, path)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(CUSTOMERS, st.data())
def test_any_changed_amount_sum_or_hash_fails_verification(
    balances: list[Balances], data: st.DataObject
) -> None:
    leaves, tree = _tree(balances)
    root = tree.root  # type: ignore[attr-defined]
    position = data.draw(st.integers(0, len(leaves) - 1))
    customer, salt, mine = leaves[position]
    path = tree.path(position)  # type: ignore[attr-defined]
    delta = data.draw(st.integers(1, 10**6))
    wallet = data.draw(st.sampled_from(["online", "shadow", "merchant"]))
    more = dataclasses.replace(mine, **{wallet: getattr(mine, wallet) + delta})
    with pytest.raises(ProofError):
        verify(root, len(leaves), position, customer, salt, more, path)
    if getattr(mine, wallet) >= delta:  # less, the same total elsewhere: still caught
        less = dataclasses.replace(mine, **{wallet: getattr(mine, wallet) - delta})
        with pytest.raises(ProofError):
            verify(root, len(leaves), position, customer, salt, less, path)
    with pytest.raises(ProofError):
        verify(root, len(leaves), position, customer + "x", salt, mine, path)
    with pytest.raises(ProofError):
        verify(root, len(leaves), position, customer, secrets.token_bytes(32), mine, path)
    if path:
        i = data.draw(st.integers(0, len(path) - 1))
        sums = [*path]
        # Move value between siblings keeping the total: the sound construction sees it.
        sums[i] = Node(path[i].hash, path[i].sum + delta)
        with pytest.raises(ProofError):
            verify(root, len(leaves), position, customer, salt, mine, tuple(sums))
        hashes = [*path]
        hashes[i] = Node(bytes(32), path[i].sum)
        with pytest.raises(ProofError):
            verify(root, len(leaves), position, customer, salt, mine, tuple(hashes))
        with pytest.raises(ProofError):
            verify(root, len(leaves), position, customer, salt, mine, path[:-1])
        with pytest.raises(ProofError):
            verify(root, len(leaves), position, customer, salt, mine, (*path, path[0]))
    with pytest.raises(ProofError):  # the root's total is part of what is checked
        verify(Node(root.hash, root.sum + 1), len(leaves), position, customer, salt, mine, path)
    if len(leaves) > 1:  # the same leaf claimed at another position
        other = (position + 1) % len(leaves)
        with pytest.raises(ProofError):
            verify(root, len(leaves), other, customer, salt, mine, path)


def test_amounts_are_non_negative_and_bounded() -> None:
    salt = bytes(32)
    with pytest.raises(AmountError):
        leaf("c", salt, Balances(-1, 0, 0))
    with pytest.raises(AmountError):
        leaf("c", salt, Balances(MAX_SUM, 1, 0))
    with pytest.raises(AmountError):
        leaf("c", b"short", Balances(1, 0, 0))
    # a sibling claiming a negative sum to cancel another's is refused, not added
    mine = Balances(5, 0, 0)
    tree = build([leaf("a", salt, mine), leaf("b", salt, Balances(7, 0, 0))])
    with pytest.raises(AmountError):
        verify(tree.root, 2, 0, "a", salt, mine, (Node(tree.path(0)[0].hash, -7),))


# -- an intermediary's publication, in process ---------------------------------------------


@pytest.fixture
def net() -> OfflineNetwork:
    net = OfflineNetwork()
    for bank in net.banks:
        net.issue(bank, 1_000_000_00)
    return net


def test_a_published_commitment_totals_the_holdings_and_every_customer_verifies(
    net: OfflineNetwork,
) -> None:
    bank = net.banks["bank-a"]
    users = [net.add_user(f"u{i}", "bank-a", online=(i + 1) * 10_00) for i in range(5)]
    shop = net.add_merchant("shop", "bank-a")
    users[0].phone.top_up(users[0].pin, net.money(5_00))
    shop.pos.charge(users[0].card.process, users[0].pin, net.money(2_00))
    shop.pos.sync()
    signed = publish(bank)
    body, statement = open_commitment(signed, net.central.trust, "bank-a")
    holdings = next(p.holdings for p in net.central.positions() if p.institution == "bank-a")
    assert body.total == holdings.minor == statement.holdings.minor == bank.total_held().minor
    assert body.leaf_count == 6 and body.period == 1
    for user in users:
        mine = user.phone.check_liabilities(user.pin, net.central.trust, user.customer_id)
        assert mine.online == user.online.minor
    # The leaf is the customer's wallets as published; a wrong expectation is a typed error.
    shop_proof = proof_for(bank, shop.customer_id, 1)
    assert check_inclusion(body, shop_proof, shop.customer_id).merchant == 2_00
    with pytest.raises(OffpayError) as wrong:
        users[1].phone.check_liabilities(
            users[1].pin, net.central.trust, users[1].customer_id, Balances(1, 2, 3)
        )
    assert wrong.value.code == "liabilities.balance_mismatch"
    # Another customer's number: the proof is not for it.
    with pytest.raises(ProofError):
        users[2].phone.check_liabilities(users[2].pin, net.central.trust, users[3].customer_id)
    # A customer the commitment leaves out is told so, and the sync did not run.
    late = net.add_user("late", "bank-a", online=3_00)
    late.phone.top_up(late.pin, net.money(1_00))
    sessions = bank.device(late.card_id).last_session_no
    with pytest.raises(OffpayError) as left_out:
        late.phone.check_liabilities(late.pin, net.central.trust, late.customer_id)
    assert left_out.value.code == "liabilities.not_included"
    assert bank.device(late.card_id).last_session_no == sessions
    late.phone.sync(late.pin)  # the card carries on as before
    # A second period: new salts, the newest is served.
    assert payload_of(Signed.from_bytes(publish(bank)), LiabilitiesCommitment).period == 2
    assert commitment(bank)[0] == 2 and commitment(bank, 1)[1] == signed
    first, second = (proof_for(bank, users[0].customer_id, p) for p in (1, 2))
    assert first.salt != second.salt
    assert late.phone.check_liabilities(late.pin, net.central.trust, late.customer_id).online
    assert net.check_conservation()


def test_a_total_that_is_not_the_holdings_publishes_nothing(net: OfflineNetwork) -> None:
    bank = net.banks["bank-a"]
    user = net.add_user("u", "bank-a", online=10_00)
    with bank.db.begin() as conn:  # the books disagree with the central bank's record
        conn.execute(
            text("UPDATE accounts SET balance = balance - 1 WHERE id = :w"),
            {"w": f"{user.customer_id}/online"},
        )
    with pytest.raises(OffpayError) as refused:
        publish(bank)
    assert refused.value.code == "liabilities.total_mismatch"
    with bank.db.connect() as conn:
        count = select(func.count()).select_from(schema.liability_commitments)
        assert conn.execute(count).scalar() == 0
    with pytest.raises(OffpayError) as none:
        commitment(bank)
    assert none.value.code == "liabilities.none_published"
    with pytest.raises(OffpayError) as no_proof:  # nothing published: the sync is not run
        user.phone.check_liabilities(user.pin, net.central.trust, user.customer_id)
    assert no_proof.value.code == "liabilities.none_published"


def test_the_central_bank_states_holdings_only_to_the_intermediary_itself(
    net: OfflineNetwork,
) -> None:
    bank = net.banks["bank-a"]
    _, statement = ask_holdings(bank)
    assert statement.institution == "bank-a" and statement.receiver == bank.id
    # bank-b cannot get bank-a's statement: the central bank answers for the signer's bank.
    _, other = ask_holdings(net.banks["bank-b"])
    assert other.institution == "bank-b"


# -- the auditor's check --------------------------------------------------------------------


def test_the_auditor_names_an_intermediary_whose_total_is_not_its_holdings(
    net: OfflineNetwork,
) -> None:
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    net.add_user("ann", "bank-a", online=30_00)
    net.add_user("bob", "bank-b", online=20_00)
    honest_a, honest_b = publish(a), publish(b)
    records = {("bank-a", 1): 30_00, ("bank-b", 1): 20_00}
    trust = net.central.trust
    assert check_published_totals([honest_a, honest_b], records, trust) == []
    # bank-b omits a customer: its total is below its holdings; the statement it encloses
    # (honest, signed by the central bank) says so, so the commitment does not hold together.
    body = payload_of(Signed.from_bytes(honest_b), LiabilitiesCommitment)
    short = sign(dataclasses.replace(body, total=body.total - 5_00, period=2), b.credential)
    # Or it reuses a statement from a period when its holdings were lower.
    net.add_user("cy", "bank-b", online=7_00)
    stale = sign(dataclasses.replace(body, period=3), b.credential)
    records.update({("bank-b", 2): 20_00, ("bank-b", 3): 27_00})
    findings = check_published_totals(
        [honest_a, short.to_bytes(), stale.to_bytes()], records, trust
    )
    assert [(f.party, f.code) for f in findings] == [
        ("bank-b", "liabilities.bad_commitment"),
        ("bank-b", "liabilities.total_differs"),
    ]
    # Reusing a statement is named too, with both commitments (honest_b enclosed it first).
    reused = check_published_totals([honest_b, stale.to_bytes()], records, trust)
    assert [f.code for f in reused] == [
        "liabilities.statement_reused",
        "liabilities.total_differs",
    ]
    assert "bank-b/liabilities/1" in reused[0].records
    # And a statement from long before the publication is not "that moment".
    late = sign(dataclasses.replace(body, published_at=body.published_at + 3600), b.credential)
    assert [f.code for f in check_published_totals([late.to_bytes()], records, trust)] == [
        "liabilities.stale_statement"
    ]
    assert findings[0].records == ("bank-b/liabilities/2",)
    assert "bank-b/liabilities/3" in findings[1].records
    # Signed by someone else than the institution it names: refused.
    forged = sign(body, a.credential)
    with pytest.raises(CommitmentError):
        open_commitment(forged.to_bytes(), trust)
    assert check_published_totals([forged.to_bytes()], records, trust)[0].code == (
        "liabilities.bad_commitment"
    )
    # A period the central bank has no record of is named too.
    assert check_published_totals([honest_a], {}, trust)[0].code == (
        "liabilities.no_holdings_record"
    )
    assert isinstance(body.holdings, Signed)
    assert payload_of(body.holdings, HoldingsStatement).holdings.minor == 20_00


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RemoteNetwork, object]]:
    network = init_network(tmp_path_factory.mktemp("net"), ("bank-a",))
    with contextlib.ExitStack() as stack:
        for name in network.urls:
            built = build_service(network, name, retry_every=-1)
            stack.enter_context(serve_party(network, name, create_app(built.service)))
        remote = RemoteNetwork(network, retries=1)
        stack.callback(remote.close)
        remote.issue("bank-a", 1_000_000_00)
        yield remote, stack.enter_context(client_of(network, CENTRAL))


def test_the_phone_verifies_its_inclusion_against_a_running_service(
    served: tuple[RemoteNetwork, httpx.Client],
) -> None:
    remote, http = served
    network = remote.network
    dee = remote.add_user("dee", "bank-a", online=25_00)
    remote.add_user("eli", "bank-a", online=5_00)
    dee.phone.top_up(dee.pin, remote.money(10_00))
    url = network.urls["bank-a"]
    admin = {"Authorization": f"Bearer {network.admin_token('bank-a')}"}
    published = http.post(
        f"{url}/v1/admin/liabilities/publish",
        headers={**admin, "Idempotency-Key": secrets.token_hex(16)},
    )
    assert published.status_code == 200, published.text
    summary = published.json()
    assert summary["total"] == 30_00 and summary["leaf_count"] == 2
    # Public: anyone gets the signed commitment, and it verifies to the network's root.
    got = http.get(f"{url}/v1/liabilities/commitment")
    assert got.status_code == 200 and got.headers["content-type"] == "application/cbor"
    body, _ = open_commitment(got.content, remote.trust, "bank-a")
    assert body.root.hex() == summary["root"]
    assert http.get(f"{url}/v1/liabilities/commitment?period=9").json()["code"] == (
        "liabilities.none_published"
    )
    mine = dee.phone.check_liabilities(dee.pin, remote.trust, dee.customer_id)
    assert (mine.online, mine.shadow, mine.merchant) == (15_00, 10_00, 0)
    assert dee.card_balance == remote.money(10_00)  # the sync went through as any sync
    # A proof without the card's signed session: refused at the door.
    refused = http.post(
        f"{url}/v1/messages/liabilities-proof",
        content=b"\xa0",
        headers={"Content-Type": "application/cbor", "Idempotency-Key": secrets.token_hex(8)},
    )
    assert refused.status_code == 400
    # The operator's publication needs the admin token.
    assert http.post(f"{url}/v1/admin/liabilities/publish").status_code == 401


def test_the_cli_commands_refuse_in_one_line(tmp_path: pytest.TempPathFactory) -> None:
    network = init_network(tmp_path, ("bank-a",))  # type: ignore[arg-type]
    runner = CliRunner()
    data = str(network.folder)
    result = runner.invoke(
        cli, ["network", "watchdog-clear", "--data", data, "--party", "bank-a", "--force"]
    )
    assert result.exit_code == 2 and "--force needs a --reason" in result.output
    result = runner.invoke(
        cli, ["network", "publish-liabilities", "--data", data, "--bank", "bank-z"]
    )
    assert result.exit_code == 2 and "bank-z" in result.output
    assert "Traceback" not in result.output


def test_an_intermediary_publishes_by_itself_at_its_interval(tmp_path: object) -> None:
    """``--liabilities-every``: the service's background publishes period after period."""
    network = init_network(tmp_path, ("bank-a",))  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        central = build_service(network, CENTRAL, retry_every=-1)
        stack.enter_context(serve_party(network, CENTRAL, create_app(central.service)))
        bank = build_service(network, "bank-a", retry_every=-1, liabilities_every=0.2)
        app = create_app(bank.service, background=bank.background)
        stack.enter_context(serve_party(network, "bank-a", app))
        party = bank.service.party
        deadline = time.monotonic() + 120  # a guard against a hang, not a measurement
        while time.monotonic() < deadline:
            with contextlib.suppress(OffpayError):
                if commitment(party)[0] >= 2:  # type: ignore[arg-type]
                    break
            time.sleep(0.1)
        period, signed = commitment(party)  # type: ignore[arg-type]
        assert period >= 2
        body, _ = open_commitment(signed, party.trust, "bank-a")
        assert body.total == 0 and body.leaf_count == 0
