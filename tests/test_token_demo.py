"""`offpay demo --scheme tokens` plays the sign-once token scheme end to end and ends balanced;
the scheme option refuses what it does not know."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from conftest import fits
from offpay.cli import app


def test_token_demo_plays_every_flow_and_catches_the_double_spend(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--scheme", "tokens", "--data-dir", str(tmp_path)], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    # Fits an 80-column terminal; a long step title is printed whole, wrapped, not cut.
    fits(result.output, 80)
    out = " ".join(result.output.split())  # the text as read, whatever the line breaks
    # mint/withdraw, split, offline transfers with the users' codes, merge, deposit
    assert "Withdraw (MintToken + WithdrawToken)" in out
    assert "minted SEK 300.00" in out and "(ancestry 0)" in out
    assert "Split: Ann's element makes change" in out
    assert "Offline transfer: Ann pays Ben SEK 120" in out
    assert "1 discovery:" in out and "2 verification:" in out and "3 transfer:" in out
    assert "split SEK 120.00" in out  # change made during an offer
    assert "Merge: Cleo's element combines" in out and "merged into SEK 125.00" in out
    assert "Deposit (DepositToken + RedeemToken)" in out
    # the double spend: both receivers accept offline, the second deposit is caught
    assert "SIMULATED HARDWARE BREAK" in out
    assert "keeps the key (broken)" in out
    assert "[token.double_spend]" in out
    assert "revocation list now names: element:bank-a:" in out
    assert "revocation list version 1" in out
    assert "[crypto.revoked]" in out  # the revoked element refused offline
    # conservation after every step and at the end
    assert "conservation broken" not in out
    assert out.count("conservation holds") >= 16
    assert "money issued equals money held" in out
    assert "the tokens in elements equal the tokens outstanding" in out
    names = sorted(p.name for p in tmp_path.glob("*.sqlite"))
    assert names == ["bank-a.sqlite", "bank-b.sqlite", "central-bank.sqlite"]
    assert "2. Withdraw (MintToken + WithdrawToken): Ann turns SEK 300 of her online" in out


def test_unknown_scheme_is_refused_clearly() -> None:
    result = CliRunner().invoke(app, ["demo", "--scheme", "nonsense"])
    assert result.exit_code == 2
    out = result.output
    assert "--scheme" in out and "nonsense" in out
    assert "balance" in out and "tokens" in out
