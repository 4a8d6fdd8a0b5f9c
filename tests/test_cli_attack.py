"""`offpay attack` (issue 16, point 2): every attack of the suite played through the command,
in process; its printed refusals and detections, the loss and its bound, the JSON report; the
refusals of the command itself (exit 2, one line); and a defence removed makes it fail."""

from __future__ import annotations

import json
import types

import pytest
from typer.testing import CliRunner

import offpay.attacks.faults
import offpay.device.card
import offpay.device.reader
import offpay.relay.phone
from offpay.attacks.registry import ATTACKS, BY_NAME
from offpay.cli import app
from offpay.sim.flows import FLOWS

# What each attack must show: the outcome, and a refusal code or anomaly kind that only the
# defence in question produces (None: nobody refuses or detects anything; the defence is in
# what settled, which the play checks after every round).
EXPECTED: dict[str, tuple[str, str | None]] = {
    "replayed-top-up": ("prevented", "wire.replay"),
    "replayed-reset": ("prevented", "wire.replay"),
    "stale-session": ("prevented", "device.stale_session"),
    "payment-never-reached-shop": ("prevented", "device.declined"),
    "memory-copy-written-back": ("prevented", "device.rolled_back"),
    "forged-instruction": ("prevented", "crypto.bad_certificate"),
    "instruction-to-another-card": ("prevented", "wire.wrong_receiver"),
    "altered-amount": ("prevented", "crypto.bad_signature"),
    "forged-terminal-request": ("prevented", "crypto.bad_signature"),
    "impostor-terminal": ("prevented", "crypto.bad_certificate"),
    "relay-swapping-payee": ("prevented", "wire.wrong_receiver"),
    "live-request-substitution": ("prevented", "payment.code_mismatch"),
    "cloned-card": ("detected", "conflicting_payment"),
    "rolled-back-card": ("detected", "rolled_back"),
    "rolled-back-before-defund": ("detected", "rolled_back"),
    "counterfeit-upload": ("detected", "invalid_entry"),
    "pin-brute-force": ("prevented", "pin.blocked"),
    "revoked-card": ("detected", "late_payment"),
    "revoked-terminal": ("detected", "crypto.revoked"),
    "forged-interbank-request": ("prevented", "bank.no_receipt"),
    "unbacked-card-balance": ("detected", "shortfall"),
    "clone-paid-before-sync": ("detected", "counter_reused"),
    "queued-double-spend": ("detected", "conflicting_payment"),
    "lost-instruction": ("prevented", "funds.insufficient"),
    "card-left-after-pin": ("prevented", "pin.required"),
    "concurrent-sync": ("prevented", None),
    "forged-batch-request": ("prevented", "central.conflict"),
    "forged-refund-request": ("prevented", "bank.wrong_parties"),
    "transport-faults": ("prevented", "wire.replay"),
    "token-double-spend": ("detected", "token.double_spend"),
    "token-double-spend-merged": ("prevented", "token.double_spend"),
    "token-counterfeit": ("detected", "token.value_mismatch"),
    "token-not-signed-once": ("prevented", "token.bad_proof"),
}
CARD_LIMIT = 3_000_00  # the default policy's card balance limit: what a broken card can cost


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["attack", *args])
    return result.exit_code, result.output


def test_every_attack_of_the_suite_has_an_expectation() -> None:
    assert set(EXPECTED) == set(BY_NAME)


@pytest.mark.parametrize("name", [a.name for a in ATTACKS])
def test_each_attack_played_by_the_command(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole fault sweep (679 cases) is tests/test_faults.py's; here, the command plays it
    # on the flows up to the first terminal's (its hops include a duplicated reset).
    monkeypatch.setattr(offpay.attacks.faults, "FLOWS", FLOWS[:6])
    outcome, code = EXPECTED[name]
    status, text = invoke(name)
    assert status == 0, text
    assert f"{name} ({BY_NAME[name].scheme} scheme, in-process)" in text
    assert f"outcome: {outcome}" in text
    assert (code or "no party refused anything or recorded an anomaly") in text
    assert "(within the bound)" in text
    assert "money conserved: checked" in text

    status, out = invoke(name, "--json")
    assert status == 0, out
    report = json.loads(out)
    assert (report["name"], report["outcome"], report["where"]) == (name, outcome, "in-process")
    assert report["tried"]
    if code is None:
        assert report["findings"] == []
    else:
        assert code in {f["code"] for f in report["findings"]}
    assert 0 <= report["loss"] <= report["bound"] and report["within_bound"]
    assert report["loss"] == sum(loss["amount"] for loss in report["losses"])
    assert report["conservation"]["conserved"]
    assert report["conservation"]["checks"] > len(report["findings"])
    if outcome == "prevented":
        assert report["loss"] == report["bound"] == 0
        assert {f["kind"] for f in report["findings"]} <= {"refused"}


@pytest.mark.parametrize("name", ["cloned-card", "rolled-back-card", "rolled-back-before-defund"])
def test_a_broken_card_costs_at_most_its_limit(name: str) -> None:
    report = json.loads(invoke(name, "--json")[1])
    (loss,) = report["losses"]
    assert (loss["amount"], loss["bound"]) == (100_00, CARD_LIMIT)
    assert (report["loss"], report["bound"]) == (100_00, CARD_LIMIT)
    assert [f["code"] for f in report["findings"] if f["kind"] == "blocked"] == ["blocked"]


def test_all_of_a_scheme() -> None:
    status, out = invoke("all", "--scheme", "tokens", "--json")
    assert status == 0, out
    reports = json.loads(out)
    assert [r["name"] for r in reports] == [a.name for a in ATTACKS if a.scheme == "tokens"]
    status, text = invoke("all", "--scheme", "tokens")
    assert status == 0
    assert "4 of 4 attacks played; every defence held" in text


def test_list_names_every_attack_and_says_which_play_over_http() -> None:
    status, text = invoke("list")
    assert status == 0
    for attack in ATTACKS:
        assert attack.name in text
    rows = json.loads(invoke("list", "--json")[1])
    assert {r["name"] for r in rows} == set(BY_NAME)
    over_http = {r["name"] for r in rows if r["over_http"]}
    assert {"replayed-top-up", "cloned-card", "rolled-back-card"} <= over_http
    assert not any(name.startswith("token-") for name in over_http)  # the tokens: in process
    assert all(r["why_not_http"] for r in rows if not r["over_http"])
    balance = json.loads(invoke("list", "--scheme", "balance", "--json")[1])
    assert {r["scheme"] for r in balance} == {"balance"}


def test_an_unknown_name_is_one_line_listing_the_valid_ones_exit_2() -> None:
    status, text = invoke("double-dip")
    assert status == 2
    (line,) = text.strip().splitlines()
    assert line.startswith("no attack named 'double-dip'; valid: replayed-top-up,")
    assert "cloned-card" in line and "Traceback" not in text


def test_a_named_attack_of_the_other_scheme_exits_2() -> None:
    status, text = invoke("cloned-card", "--scheme", "tokens")
    assert (status, text.strip()) == (2, "cloned-card attacks the balance scheme, not tokens")


def test_an_attack_that_cannot_be_played_over_http_says_why_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    status, text = invoke("token-double-spend", "--network", str(tmp_path))
    assert status == 2
    assert "token-double-spend cannot be played over HTTP: the back office has no route" in text
    status, text = invoke("forged-interbank-request", "--network", str(tmp_path))
    assert status == 2 and "engines' keys" in text


def test_a_network_folder_without_a_network_exits_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    status, text = invoke("cloned-card", "--network", str(tmp_path / "none"))
    assert status == 2
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text


def test_with_a_defence_removed_the_command_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The phone's code comparison taken out: Mallory's substitute request is paid, and the
    play says so instead of reporting a refusal."""
    always_equal = types.SimpleNamespace(compare_digest=lambda _a, _b: True)
    monkeypatch.setattr(offpay.relay.phone, "hmac", always_equal)
    status, text = invoke("live-request-substitution")
    assert status == 1
    assert "live-request-substitution: DEFENCE FAILED" in text
    assert "expected a refusal payment.code_mismatch, but it went through" in text


def test_a_defence_that_crashes_is_reported_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A card whose instruction check crashes instead of refusing: the command names the
    attack and the error in one line, goes on with the next attack, and exits 1."""

    def crash(*_args: object) -> bytes:
        raise RuntimeError("the instruction check crashed")

    monkeypatch.setattr(offpay.device.reader.CardClient, "apply_instruction", crash)
    status, text = invoke("all", "--scheme", "balance")
    assert status == 1
    assert "replayed-top-up: the play broke off with an unexpected RuntimeError: the " in text
    assert "Traceback" not in text
    balance = sum(1 for a in ATTACKS if a.scheme == "balance")  # every card tops up first
    assert f"0 of {balance} attacks played; {balance} failed" in text


def test_a_card_that_keeps_its_pin_after_a_reset_fails_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The card's reset taken out (its RAM kept across a power cut): the payment the holder
    entered her PIN for goes through for whoever holds the card, and the play says so."""
    monkeypatch.setattr(offpay.device.card.Card, "reset", lambda _self: None)
    status, text = invoke("card-left-after-pin")
    assert status == 1
    assert "card-left-after-pin: DEFENCE FAILED" in text
    assert "expected a refusal wire.replay, but it went through" in text
