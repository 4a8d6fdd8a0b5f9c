"""Issue 5, point 9, as the README has it: one command starts a central bank and two
intermediaries as processes on loopback ports, and the demo plays against them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from offpay.cli import app

START_TIMEOUT_S = 90
OFFPAY = (sys.executable, "-c", "from offpay.cli import app; app()")


def test_offpay_network_run_then_the_demo_against_it(tmp_path: Path) -> None:
    data = tmp_path / "offpay-network"
    log = (tmp_path / "run.log").open("w+")
    runner = subprocess.Popen(
        [*OFFPAY, "network", "run", "--data", str(data)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so that nothing outlives the test
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "stop with Ctrl-C" not in (tmp_path / "run.log").read_text():
            assert runner.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        started = (tmp_path / "run.log").read_text()
        for party in ("central-bank", "bank-a", "bank-b"):
            assert f"{party}: http://127.0.0.1:" in started

        played = CliRunner().invoke(app, ["demo", "--network", str(data)])
        assert played.exit_code == 0, played.output[-3000:]
        assert "payments notarised: 5; open shortfalls: 0" in played.output
        assert "every card equals its shadow wallet" in played.output
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
        log.close()
    assert runner.returncode == 0
