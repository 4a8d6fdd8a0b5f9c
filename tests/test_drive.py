"""Issue 16, point 1, in this process: every driving command as a separate ``offpay``
invocation on one data folder (nothing carried over in memory), the books balanced after each
step, refusals as one line with their code and exit 2, devices kept sealed on disk."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from offpay.cli import app
from offpay.crypto.pseudonyms import commitment
from offpay.device.card import pin_digest
from offpay.service.datadir import load_network, lock_party
from offpay.wire.envelope import Signed


def offpay(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def books(folder: Path, *party: str) -> dict[str, Any]:
    extra = ["--party", party[0]] if party else []
    result = offpay("books", "--json", *extra, "--data", str(folder))
    assert result.exit_code == 0, result.output
    record: dict[str, Any] = json.loads(result.output)
    assert record["conservation"]["balanced"], record["conservation"]
    assert record["conservation"]["issued"] == record["conservation"]["held"]
    return record


def step(folder: Path, *args: str) -> str:
    """One command, then the books from a further separate invocation: conserved."""
    result = offpay(*args, "--data", str(folder))
    assert result.exit_code == 0, result.output
    assert "conserved: issued" in result.output
    books(folder)
    return str(result.output)


def refused(folder: Path, *args: str) -> str:
    """A refused command: exit 2, one line with the refusal's code, no traceback, and the
    books exactly as before."""
    before = books(folder)
    result = offpay(*args, "--data", str(folder))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    after = books(folder)
    assert after["banks"] == before["banks"]
    assert after["central_bank"] == before["central_bank"]
    return str(result.output)


def wallets(record: dict[str, Any], name: str) -> dict[str, int]:
    for bank in record["banks"].values():
        for customer in bank["customers"]:
            if customer["name"] == name:
                return dict(customer["wallets"])
    raise AssertionError(f"{name} not in the books")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "net"
    made = offpay("network", "init", "--data", str(data), "--card-max-offline-transactions", "2")
    assert made.exit_code == 0, made.output
    return data


@pytest.fixture
def people(folder: Path) -> Path:
    """alice (bank-a) and bob (bank-b) with cards, shop1 (bank-b) with a terminal."""
    step(folder, "issue", "bank-a", "SEK 10000")
    step(folder, "issue", "bank-b", "SEK 10000")
    step(folder, "customer", "open", "alice", "--bank", "bank-a")
    step(folder, "customer", "open", "bob", "--bank", "bank-b")
    step(folder, "customer", "open", "shop1", "--bank", "bank-b", "--merchant")
    step(folder, "card", "issue", "alice")
    step(folder, "card", "issue", "bob", "--pin", "4321")
    step(folder, "terminal", "issue", "shop1")
    return folder


def test_every_verb_across_separate_invocations_keeps_the_books(people: Path) -> None:
    folder = people
    step(folder, "fund", "alice", "SEK 500")
    assert wallets(books(folder), "alice") == {"online": 500_00, "shadow": 0}
    assert "it holds SEK 200.00" in step(folder, "top-up", "alice", "SEK 200")
    assert wallets(books(folder), "alice") == {"online": 300_00, "shadow": 200_00}
    assert "payment " in step(folder, "pay-shop", "alice", "shop1", "SEK 25")
    out = step(folder, "pay", "alice", "bob", "SEK 10", "--payee-pin", "4321")
    assert "code " in out and "on both phones" in out
    record = books(folder)
    assert record["devices"]["alice"]["balance"] == 165_00
    assert record["devices"]["alice"]["unsynced"] == 2
    assert record["devices"]["bob"]["balance"] == 10_00
    assert record["devices"]["shop1"]["balance"] == 25_00  # the terminal holds it, unsynced
    assert wallets(record, "shop1") == {"merchant": 0}

    step(folder, "sync", "shop1")
    step(folder, "sync", "alice")
    step(folder, "sync", "bob", "--pin", "4321")
    record = books(folder)
    assert wallets(record, "shop1") == {"merchant": 25_00}
    assert wallets(record, "alice") == {"online": 300_00, "shadow": 165_00}
    assert wallets(record, "bob") == {"online": 0, "shadow": 10_00}
    assert record["central_bank"]["notarised"] == 2
    assert record["central_bank"]["positions"]["bank-a"]["holdings"] == 465_00

    assert "it holds SEK 115.00" in step(folder, "defund", "alice", "SEK 50")
    assert wallets(books(folder), "alice") == {"online": 350_00, "shadow": 115_00}
    step(folder, "lost", "alice")
    record = books(folder, "alice")
    [alice] = record["banks"]["bank-a"]["customers"]
    assert alice["devices"][0]["status"] == "blocked"
    assert [a["kind"] for a in record["banks"]["bank-a"]["anomalies"]] == ["blocked"]
    assert list(record["devices"]) == ["alice"]


def test_refusals_name_their_code_and_change_nothing(people: Path) -> None:
    folder = people
    assert "[funds.insufficient]" in refused(folder, "top-up", "alice", "SEK 200")
    step(folder, "fund", "alice", "SEK 500")
    step(folder, "top-up", "alice", "SEK 200")
    assert "[funds.insufficient]" in refused(folder, "pay-shop", "alice", "shop1", "SEK 1000")
    assert "[pin.wrong]" in refused(folder, "pay-shop", "alice", "shop1", "SEK 5", "--pin", "9999")
    assert books(folder)["devices"]["alice"]["pin_tries_left"] == 2  # the try is spent
    step(folder, "pay-shop", "alice", "shop1", "SEK 5")  # a right PIN resets the count
    step(folder, "pay-shop", "alice", "shop1", "SEK 5")
    out = refused(folder, "pay-shop", "alice", "shop1", "SEK 5")
    assert "[limit.card_max_offline_transactions]" in out
    step(folder, "fund", "alice", "SEK 3000")
    assert "[limit.card_max_balance]" in refused(folder, "top-up", "alice", "SEK 3000")
    # wrong payee PIN: the payer's card paid, the payee's refused: the payee's phone declines
    # the request, and the payer's intermediary gives the money back at sync
    step(folder, "sync", "alice")
    before = books(folder)["devices"]["alice"]["balance"]
    out = offpay("pay", "alice", "bob", "SEK 10", "--data", str(folder))  # bob's PIN is 4321
    assert out.exit_code == 2 and "[pin.wrong]" in out.output
    assert books(folder)["devices"]["alice"]["balance"] == before - 10_00
    step(folder, "sync", "bob", "--pin", "4321")
    step(folder, "sync", "alice")
    assert books(folder)["devices"]["alice"]["balance"] == before
    assert wallets(books(folder), "bob")["shadow"] == 0

    # the payer confirms a code other than the one the payee's phone shows: nothing is paid
    out = refused(folder, "pay", "alice", "bob", "SEK 1", "--payee-pin", "4321", "--code", "0")
    assert "[payment.code_mismatch]" in out
    assert books(folder)["devices"]["alice"]["balance"] == before

    step(folder, "lost", "alice")
    # the intermediary refuses a blocked card's sessions (blocked, or revoked network-wide)
    for verb in (("top-up", "alice", "SEK 1"), ("sync", "alice")):
        out = refused(folder, *verb)
        assert "[device.blocked]" in out or "[crypto.revoked]" in out, out
    # devices learn the revocation at their sync and refuse the lost card offline
    step(folder, "sync", "bob", "--pin", "4321")
    step(folder, "sync", "shop1")
    out = refused(folder, "pay", "bob", "alice", "SEK 1", "--pin", "4321")
    assert "[crypto.revoked]" in out, out
    out = refused(folder, "pay-shop", "alice", "shop1", "SEK 1")
    assert "revoked" in out, out


def test_bad_input_is_one_line_and_exit_2(people: Path) -> None:
    folder = people
    for args, words in (
        (("fund", "zoe", "SEK 5"), "nobody named 'zoe'"),
        (("fund", "alice", "SEK lots"), "amount"),
        (("fund", "alice", "EUR 5"), "SEK amount"),
        (("fund", "shop1", "SEK 5"), "shop1 is a shop"),
        (("pay-shop", "alice", "bob", "SEK 5"), "bob is a person"),
        (("pay", "alice", "alice", "SEK 5"), "cannot pay themselves"),
        (("customer", "open", "alice", "--bank", "bank-a"), "taken"),
        (("customer", "open", "carol", "--bank", "bank-z"), "no intermediary named 'bank-z'"),
        (("customer", "open", "../../x", "--bank", "bank-a"), "cannot be a name here"),
        (("customer", "open", "Carol", "--bank", "bank-a"), "cannot be a name here"),
        (("issue", "bank-z", "SEK 5"), "bank-z"),
        (("card", "issue", "alice"), "has a card already"),
        (("terminal", "issue", "shop1"), "has a terminal already"),
        (("payment", "xyz"), "32 hex digits"),
        (("books", "--party", "zoe"), "nobody named 'zoe'"),
    ):
        out = refused(folder, *args)
        assert words in out, (args, out)
    nowhere = offpay("fund", "alice", "SEK 5")
    assert nowhere.exit_code == 2 and "--data DIR" in nowhere.output
    empty = offpay("books", "--data", str(folder.parent / "empty"))
    assert empty.exit_code == 2 and "network init" in empty.output


def test_a_served_folder_and_a_second_command_are_refused(people: Path) -> None:
    config = load_network(people)
    held = lock_party(config, "bank-a")  # as `offpay serve intermediary` holds it
    try:
        out = offpay("books", "--data", str(people))
        assert out.exit_code == 2 and "bank-a" in out.output and "running" in out.output
    finally:
        held.close()
    with (people / "drive" / "lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        out = offpay("books", "--data", str(people))
        assert out.exit_code == 2 and "another offpay command" in out.output
    network = offpay("books", "--network", str(people))
    assert network.exit_code == 2 and "does not answer" in network.output


def test_devices_stay_sealed_on_disk_and_refuse_a_rolled_back_memory(people: Path) -> None:
    folder = people
    card_file = folder / "drive" / "devices" / "alice.card"
    assert stat.S_IMODE(card_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "drive" / "people.json").stat().st_mode) == 0o600
    card_id = books(folder)["people"]["alice"]["device_id"]
    record = json.loads(card_file.read_text())
    memory = base64.b64decode(record["memory"])
    assert card_id.encode() not in memory  # the state is sealed, not pickled in the clear
    assert pin_digest(card_id, "1234") not in memory
    assert "1234" not in card_file.read_text().replace(record["memory"], "")

    step(folder, "fund", "alice", "SEK 500")
    step(folder, "top-up", "alice", "SEK 200")
    old_memory = json.loads(card_file.read_text())["memory"]
    step(folder, "pay-shop", "alice", "shop1", "SEK 25")
    # the attacker writes back the memory they copied (the chip's counter moved on)
    now = json.loads(card_file.read_text())
    now["memory"] = old_memory
    card_file.write_text(json.dumps(now))
    out = offpay("pay-shop", "alice", "shop1", "SEK 25", "--data", str(folder))
    assert out.exit_code == 2 and "[device.rolled_back]" in out.output
    # damaged file: one line, no traceback
    card_file.write_text("{not json")
    out = offpay("top-up", "alice", "SEK 1", "--data", str(folder))
    assert out.exit_code == 2 and "damaged" in out.output and "Traceback" not in out.output
    assert os.path.exists(folder / "drive" / "apps" / "shop1.pos")
    (folder / "drive" / "people.json").write_text("[1, 2]")
    out = offpay("books", "--data", str(folder))
    assert out.exit_code == 2 and "people.json is damaged" in out.output


def test_books_tables_and_payment_records(people: Path) -> None:
    folder = people
    step(folder, "fund", "alice", "SEK 500")
    step(folder, "top-up", "alice", "SEK 200")
    out = step(folder, "pay", "alice", "bob", "SEK 10", "--payee-pin", "4321")
    tx_id = out.split("payment ")[1][:32]
    pending = offpay("payment", tx_id, "--data", str(folder))
    assert pending.exit_code == 0, pending.output
    before = json.loads(pending.output)
    assert before["central-bank"]["notary"] is None
    assert before["bank-a"]["debit"] is None and before["bank-b"]["credit"] is None
    step(folder, "sync", "bob", "--pin", "4321")
    after = json.loads(offpay("payment", tx_id, "--data", str(folder)).output)
    assert after["central-bank"]["notary"]["amount"] == 10_00
    assert after["bank-a"]["debit"]["amount"] == 10_00
    assert after["bank-b"]["credit"]["amount"] == 10_00
    assert after["bank-b"]["credit"]["recorded_at"].endswith("+00:00")
    assert after["central-bank"]["notary"]["recorded_at"] is not None
    # Both intermediaries kept the signed payment itself and its digest; the notary only a
    # commitment to it, under the pseudonym both intermediaries book.
    notary = after["central-bank"]
    for party, step_ in (("bank-a", "debit"), ("bank-b", "credit")):
        record = after[party][step_]
        kept = Signed.from_bytes(base64.b64decode(record["signed_payment"]))
        assert kept.digest.hex() == record["evidence"]
        assert record["pseudonym"] == notary["pseudonym"] != tx_id
        assert notary["notary"]["commitment"] == commitment(kept.digest).hex()
    # Alice's card synchronised (her top-up): the books say when.
    customers = books(folder)["banks"]["bank-a"]["customers"]
    alices = [d for c in customers if "alice" in c["name"].lower() for d in c["devices"]]
    assert alices and all(d["last_sync"] is not None for d in alices)

    tables = offpay("books", "--data", str(folder))
    assert tables.exit_code == 0, tables.output
    for words in ("central bank", "bank-a", "pending queue", "anomalies", "losses", "conserved"):
        assert words in tables.output
    policy = offpay(
        "policy", "publish", "bank-a", "--card-max-balance", "SEK 150", "--data", str(folder)
    )
    assert policy.exit_code == 0 and "version 2" in policy.output
    assert books(folder)["banks"]["bank-a"]["policy"]["card_max_balance"] == 150_00
    bad = offpay("policy", "publish", "bank-a", "--version", "1", "--data", str(folder))
    assert bad.exit_code == 2 and "[policy.downgrade]" in bad.output
