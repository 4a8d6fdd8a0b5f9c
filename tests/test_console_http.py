"""Issue 17, points 2 and 3 over HTTP without a browser. The token scheme: the lab's token
wallets withdraw from and deposit to served intermediaries (a new element certified by
`/v1/admin/token-elements`), transfer offline in three phases across intermediaries, split and
merge; the mint's count of tokens outstanding and the audit follow every step. The console's
admin actions: a policy, a blocked card and its expired hold released."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from conftest import client_of, serve_party
from offpay.attacks.report import Outcome
from offpay.console.desk import ConsoleError, Desk
from offpay.console.lab import LAB_ATTACKS, Lab
from offpay.drive.workbench import DriveError, workbench
from offpay.errors import OffpayError
from offpay.service.app import create_app
from offpay.service.client import AdminClient
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import build


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    config = init_network(tmp_path_factory.mktemp("tokens"), ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        for name in config.urls:
            built = build(config, name, retry_every=-1)
            app = create_app(built.service, background=built.background)
            stack.enter_context(serve_party(config, name, app))
        yield config


@pytest.fixture
def lab(network: NetworkConfig) -> Iterator[Lab]:
    opened = Lab(network)
    try:
        yield opened
    finally:
        opened.close()


def admin_get(config: NetworkConfig, party: str, path: str) -> dict:  # type: ignore[type-arg]
    client = AdminClient(
        config.urls[party], config.admin_token(party), client=client_of(config, party)
    )
    try:
        return dict(client.get(path))
    finally:
        client.close()


def online(config: NetworkConfig, bank: str, name: str) -> int:
    for c in admin_get(config, bank, "/v1/admin/books")["customers"]:
        if c["name"] == name:
            return int(c["wallets"]["online"])
    raise AssertionError(name)


def outstanding(config: NetworkConfig) -> int:
    return int(admin_get(config, CENTRAL, "/v1/admin/books")["tokens"])


def audit_balanced(config: NetworkConfig) -> None:
    net = RemoteNetwork(config)
    try:
        audit, problems = net.audit()
    finally:
        net.close()
    assert audit.balanced and not problems, (audit, problems)


def in_elements(lab: Lab) -> int:
    return sum(t.value.minor for held in lab.token_wallets().values() for t in held)


def test_withdraw_transfer_split_merge_and_deposit_over_http(
    network: NetworkConfig, lab: Lab
) -> None:
    for bank in network.banks:
        lab.issue(bank, "5000")
    lab.open("tia", "bank-a", "person")
    lab.open("uma", "bank-b", "person")
    lab.fund("tia", "300")
    assert "element:bank-a:" in lab.token_open("tia")
    assert "element:bank-b:" in lab.token_open("uma")
    with pytest.raises(DriveError):
        lab.token_open("tia")  # one element each

    assert "SEK 120.00" in lab.withdraw("tia", "120")
    assert "SEK 30.00" in lab.withdraw("tia", "30")
    assert online(network, "bank-a", "tia") == 150_00
    assert outstanding(network) == in_elements(lab) == 150_00
    audit_balanced(network)

    # Offline, across intermediaries: the payer's element makes change during the offer.
    paid = lab.token_transfer("tia", "uma", "45")
    assert "discovery code" in paid
    wallets = lab.token_wallets()
    assert sum(t.value.minor for t in wallets["uma"]) == 45_00
    assert sum(t.value.minor for t in wallets["tia"]) == 105_00
    assert all(t.ancestry >= 1 for t in wallets["uma"])  # it carries its history

    # Split and merge inside one element change nothing the mint counts.
    biggest = max(wallets["tia"], key=lambda t: t.value.minor)
    lab.split("tia", biggest.id, "10")
    assert len(lab.token_wallets()["tia"]) == len(wallets["tia"]) + 1
    ids = " ".join(t.id for t in lab.token_wallets()["tia"])
    assert "SEK 105.00" in lab.merge("tia", ids)
    assert [t.value.minor for t in lab.token_wallets()["tia"]] == [105_00]
    assert outstanding(network) == in_elements(lab) == 150_00

    # Deposit at the payee's own intermediary: the tokens are redeemed, the wallet credited.
    lab.deposit("uma", "45")
    assert online(network, "bank-b", "uma") == 45_00
    assert lab.token_wallets()["uma"] == []
    assert outstanding(network) == in_elements(lab) == 105_00
    audit_balanced(network)


def test_token_requests_that_cannot_be_done_change_nothing(
    network: NetworkConfig, lab: Lab
) -> None:
    lab.issue("bank-a", "100")
    lab.open("vic", "bank-a", "person")
    lab.open("wes", "bank-a", "person")
    lab.token_open("vic")
    before = outstanding(network)
    with pytest.raises(OffpayError):
        lab.withdraw("vic", "50")  # nothing in the online wallet
    with pytest.raises(DriveError):
        lab.withdraw("wes", "1")  # no token wallet
    with pytest.raises(OffpayError):
        lab.token_transfer("vic", "vic", "1")
    with pytest.raises(DriveError):
        lab.split("vic", "ffff", "1")
    lab.offline.add("vic")
    with pytest.raises(ConsoleError):
        lab.withdraw("vic", "1")
    assert outstanding(network) == before
    audit_balanced(network)


def test_a_blocked_card_s_hold_is_released_once_its_window_has_passed(
    network: NetworkConfig, lab: Lab
) -> None:
    desk = Desk(network)
    token = network.admin_token("bank-b")
    lab.issue("bank-b", "500")
    lab.open("xan", "bank-b", "person")
    lab.fund("xan", "100")
    lab.top_up("xan", "60", "1234")
    with pytest.raises(OffpayError):
        desk.publish_policy("bank-b", "wrong", {"blocked_window_hours": "0"})
    assert "version 2" in desk.publish_policy("bank-b", token, {"blocked_window_hours": "0"})
    card = next(
        d["id"]
        for c in admin_get(network, "bank-b", "/v1/admin/books")["customers"]
        if c["name"] == "xan"
        for d in c["devices"]
    )
    with pytest.raises(ConsoleError):
        desk.block("bank-b", token, "card:bank-b:nobody")
    desk.block("bank-b", token, card)
    assert card in admin_get(network, CENTRAL, "/v1/admin/books")["revoked"]
    assert "released 1 " in desk.release_expired("bank-b", token)
    assert online(network, "bank-b", "xan") == 100_00  # the shadow wallet came back
    assert "released 0 " in desk.release_expired("bank-b", token)  # once only
    audit_balanced(network)
    desk.close()


@pytest.mark.parametrize("attack", sorted(LAB_ATTACKS))
def test_each_attack_of_the_lab_is_caught_within_its_bound(
    network: NetworkConfig, lab: Lab, attack: str
) -> None:
    """The lab's attacks against the served parties: each refused or detected, what it cost
    within the limits policy's bound, money conserved; the books show what was caught."""
    report = lab.attack(attack)
    assert report.name == attack and lab.reports[0] is report
    assert report.findings, "every attack is refused or detected by some party"
    assert report.within_bound and report.conserved
    audit_balanced(network)
    if report.outcome is Outcome.DETECTED and report.losses:
        anomalies = [
            a for b in network.banks for a in admin_get(network, b, "/v1/admin/books")["anomalies"]
        ]
        assert {x.device for x in report.losses} & {a["device"] for a in anomalies}


def test_an_attack_the_lab_does_not_offer_is_refused(lab: Lab) -> None:
    with pytest.raises(ConsoleError):
        lab.attack("pin-brute-force")


def test_pages_show_devices_while_a_command_drives_the_folder(
    network: NetworkConfig, lab: Lab
) -> None:
    lab.open("yan", "bank-a", "person")
    with workbench(network.folder, served=True):  # an `offpay` command is running
        assert "yan" in {d["name"] for d in lab.devices()}
        with pytest.raises(OffpayError) as busy:
            lab.fund("yan", "1")
        assert "another offpay command" in busy.value.message
    lab.issue("bank-a", "1")
    assert "funded with SEK 1.00" in lab.fund("yan", "1")  # the folder is free again
