"""Issue 17, point 3 (the token scheme's part): the token requests over HTTP against served
intermediaries and a served central bank — withdraw, the three-phase offline transfer, split
and merge, deposit, renewal, a double spend caught and its element revoked — with money
conserved after every step; and ``offpay demo --network DIR --scheme tokens``."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from conftest import client_of, network_running, serve_party
from offpay.cli import app
from offpay.errors import DoubleSpend, OffpayError
from offpay.money import Money
from offpay.service.app import create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network, load_network
from offpay.service.remote_tokens import RemoteTokenNetwork
from offpay.service.serve import build
from offpay.sim.token_demo import break_sign_once
from offpay.tokens.element import TokenElement
from offpay.tokens.transfer import ReceiverSession, SenderSession, transfer_offline

SEK = 100


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    config = init_network(tmp_path_factory.mktemp("tokens") / "net", ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        for name in config.urls:
            built = build(config, name, retry_every=-1)
            stack.enter_context(
                serve_party(config, name, create_app(built.service, background=built.background))
            )
        yield config


@pytest.fixture
def net(network: NetworkConfig) -> Iterator[RemoteTokenNetwork]:
    remote = RemoteTokenNetwork(network, retries=1)
    remote.issue("bank-a", 100_000 * SEK)
    remote.issue("bank-b", 100_000 * SEK)
    yield remote
    remote.check_conservation()  # whatever the test did, money issued = money held
    remote.close()


def outstanding(net: RemoteTokenNetwork) -> Money:
    return net.money(int(net.central.ledger()["tokens"]))  # type: ignore[call-overload]


def sek(n: int) -> Money:
    return Money(n * SEK, "SEK")


def test_withdraw_turns_online_money_into_a_minted_token(net: RemoteTokenNetwork) -> None:
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    assert ann.element_id.startswith("element:bank-a:")
    before = outstanding(net)
    token = ann.app.withdraw(sek(300))
    assert token.is_root and token.value == sek(300)
    assert ann.element.tokens() == [token]
    assert ann.online == sek(700)
    assert outstanding(net) == before + sek(300)
    net.check_conservation()


def test_three_phases_split_merge_and_deposit_across_intermediaries(
    net: RemoteTokenNetwork,
) -> None:
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    ann.app.withdraw(sek(300))
    before = outstanding(net)

    # Discovery with the 6-digit codes, verification with a fresh address, transfer with the
    # confirmation: the phones' elements only, no network.
    sender, receiver = SenderSession(ann.element, sek(120)), ReceiverSession(ben.element, sek(120))
    sender_proof = sender.on_hello(receiver.hello())
    receiver_proof = receiver.on_hello(sender.hello())
    sender.on_proof(receiver_proof)
    receiver.on_proof(sender_proof)
    assert len(sender.code) == 6 and sender.code == receiver.code
    sender.users_agree(receiver.code)
    receiver.users_agree(sender.code)
    address = receiver.on_offer(sender.offer())  # Ann's element splits 300 into 120 + 180
    sender.on_confirmation(receiver.on_transfer(sender.on_address(address)))
    paid = receiver.received
    assert paid is not None and paid.value == sek(120) and len(paid.ancestors) == 1
    assert ann.tokens == sek(180)

    # Ben's element merges what it gets into one token, then deposits it at bank-b.
    ann_split = ann.element.split(ann.element.tokens()[0].id, sek(30))
    assert sorted(t.value for t in ann_split) == [sek(30), sek(150)]
    transfer_offline(ann.element, ben.element, sek(30))
    merged = ben.element.merge([t.id for t in ben.element.tokens()])
    assert merged.value == sek(150) and len(merged.ancestors) == 2
    ben.app.deposit(sek(150))
    assert ben.online == sek(150) and ben.tokens == sek(0)
    assert outstanding(net) == before - sek(150)  # redeemed at the central bank
    assert ann.online == sek(200) and ann.tokens == sek(150)


def test_a_long_history_is_renewed_at_the_next_online_moment(net: RemoteTokenNetwork) -> None:
    ann = net.add_token_user("Ann", "bank-a", online=100 * SEK)
    ben = net.add_token_user("Ben", "bank-b", online=100 * SEK)
    ben.app.max_ancestry = 2
    token = ann.app.withdraw(sek(10))
    for _ in range(3):
        token = transfer_offline(ann.element, ben.element, sek(10))
        token = transfer_offline(ben.element, ann.element, sek(10))
    token = transfer_offline(ann.element, ben.element, sek(10))
    assert ben.element.verify(token).length > 2
    before, online = outstanding(net), ben.online

    ben.app.withdraw(sek(1))  # the online moment renews what has grown too long

    fresh = [t for t in ben.element.tokens() if t.value == sek(10)]
    assert len(fresh) == 1 and fresh[0].is_root and fresh[0].id != token.id
    assert ben.element.verify(fresh[0]).length == 0
    assert ben.online == online - sek(1)
    assert outstanding(net) == before + sek(1)  # renewal mints what it redeemed


def test_a_double_spend_is_refused_at_deposit_and_its_element_revoked(
    net: RemoteTokenNetwork,
) -> None:
    mallory = net.add_token_user("Mallory", "bank-a", online=100 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cleo = net.add_token_user("Cleo", "bank-b")
    (fifty,) = [mallory.app.withdraw(sek(50))]
    break_sign_once(mallory.element)
    transfer_offline(mallory.element, ben.element, sek(50))
    mallory.element.store(fifty)  # the broken element kept the key: the copy spends again
    transfer_offline(mallory.element, cleo.element, sek(50))

    ben.app.deposit(sek(50))
    with pytest.raises(DoubleSpend):
        cleo.app.deposit(sek(50))
    assert ben.online == sek(50) and cleo.online == sek(0)  # the second branch is not paid
    assert mallory.element_id in net.revoked_elements()
    # Any later online moment brings the list; the revoked element is refused offline.
    ben.app.withdraw(sek(10))
    assert mallory.element_id in ben.element.trust.revoked
    with pytest.raises(OffpayError) as refused:
        transfer_offline(mallory.element, ben.element, sek(10))
    assert refused.value.code == "crypto.revoked"


def test_provisioning_refuses_a_bad_key_and_an_unknown_customer(
    net: RemoteTokenNetwork, network: NetworkConfig
) -> None:
    url = f"{network.urls['bank-a']}/v1/admin/token-elements"
    auth = {"Authorization": f"Bearer {network.admin_token('bank-a')}"}
    customer = net.banks["bank-a"].open_customer(f"Eve {uuid.uuid4().hex[:6]}")
    element = TokenElement.manufacture(network.algorithm)
    good = base64.b64encode(element.public_key).decode()
    with client_of(network, CENTRAL) as http:
        for body, code in (
            ({"customer_id": customer, "public_key": "bm90IGEga2V5"}, "bank.bad_key"),
            ({"customer_id": customer, "public_key": "%%%"}, "bank.bad_key"),  # not base64
            ({"customer_id": "nobody", "public_key": good}, "not_found"),
        ):
            answer = http.post(
                url, json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex}
            )
            assert 400 <= answer.status_code < 500, answer.text
            assert answer.json()["code"].startswith(code), answer.text
        assert http.post(url, json={"customer_id": customer, "public_key": good}).status_code == 401
        books = http.get(f"{network.urls['bank-a']}/v1/admin/books", headers=auth).json()
    (eve,) = [c for c in books["customers"] if c["id"] == customer]
    assert eve["devices"] == []  # nothing refused was registered


def test_token_requests_are_settlements_in_the_metrics(
    net: RemoteTokenNetwork, network: NetworkConfig
) -> None:
    def settled(kind: str) -> float:
        with client_of(network, CENTRAL) as http:
            text = http.get(f"{network.urls['bank-a']}/metrics").text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "offpay_settlements_total" and s.labels["kind"] == kind
        )

    ann = net.add_token_user("Ann", "bank-a", online=100 * SEK)
    withdrawn, deposited = settled("token-withdraw"), settled("token-deposit")
    ann.app.withdraw(sek(20))
    ann.app.deposit(sek(20))
    assert settled("token-withdraw") == withdrawn + 1
    assert settled("token-deposit") == deposited + 1


def test_offpay_demo_plays_the_token_scheme_against_the_services(
    network: NetworkConfig,
) -> None:
    """Twice: the network outlives a demo, and the second counts only its own tokens."""
    for _ in range(2):
        played = CliRunner().invoke(
            app, ["demo", "--network", str(network.folder), "--scheme", "tokens"]
        )
        assert played.exit_code == 0, played.output[-3000:]
        text = " ".join(played.output.split())
        assert "the phones' wallet apps reach them over HTTP" in text
        assert "refused [token.double_spend]" in text
        assert "the double spend was caught and its element revoked" in text
        assert "conservation broken" not in text
    remote = RemoteTokenNetwork(network, retries=1)
    try:
        remote.check_conservation()
        assert remote.central.ledger()["issued"] > 0
    finally:
        remote.close()
    assert CENTRAL in network.urls


def test_the_token_demo_against_offpay_network_run(tmp_path: Path) -> None:
    """The same demo against services in their own processes, as the README has it."""
    data, run_log = tmp_path / "net", tmp_path / "run.log"
    with network_running(data, run_log) as runner:
        played = CliRunner().invoke(app, ["demo", "--network", str(data), "--scheme", "tokens"])
        assert played.exit_code == 0, played.output[-3000:]
        assert "the double spend was caught and its element revoked" in " ".join(
            played.output.split()
        )
        remote = RemoteTokenNetwork(load_network(data), retries=1)
        try:
            audit = remote.check_conservation()
        finally:
            remote.close()
        assert audit.balanced and audit.tokens.minor > 0
    assert runner.returncode == 0
