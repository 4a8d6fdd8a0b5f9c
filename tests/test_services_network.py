"""Issue 5, point 9, as the README has it: one command starts a central bank and two
intermediaries as processes on loopback ports, and the demo plays against them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from typer.testing import CliRunner

from conftest import OFFPAY, network_running
from offpay.cli import app

START_TIMEOUT_S = 90


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
        urls = json.loads((data / "network.json").read_text())["urls"]
        for party in ("central-bank", "bank-a", "bank-b"):
            # What it starts, where, and that it is up, in that order.
            starting = started.index(f"starting {party} at {urls[party]}")
            ready = started.index(f"{party}: {urls[party]}  (API docs: {urls[party]}/docs)")
            assert starting < ready
        assert "3 services running" in started
        assert "stopped" not in started

        played = CliRunner().invoke(app, ["demo", "--network", str(data)])
        assert played.exit_code == 0, played.output[-3000:]
        text = " ".join(played.output.split())
        # The same payments as in process, the limits part included (its policies published
        # through bank-a's admin route): two of them settle there.
        assert "payments notarised: 7; open shortfalls: 0" in text
        assert "bank-a's limits policy, version 2" in text
        assert "limit.payment_max" in text
        assert "every card equals its shadow wallet" in text
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
        log.close()
    assert runner.returncode == 0
    # When it has stopped, it says so: each service, intermediaries before the central bank.
    ended = (tmp_path / "run.log").read_text().split("stop with Ctrl-C", 1)[1]
    order = [ended.index(f"stopped {p}\n") for p in ("bank-b", "bank-a", "central-bank")]
    assert ended.index("stopping the network (SIGTERM)") < order[0]
    assert order == sorted(order)
    assert ended.rstrip().endswith("the network has stopped: no service of it is running")


def test_network_run_on_a_running_network_says_so_and_touches_nothing(tmp_path: Path) -> None:
    data = tmp_path / "offpay-network"
    with network_running(data, tmp_path / "run.log") as runner:
        logs = {p: p.read_bytes() for p in data.glob("*/service.log")}
        locks = {p: p.read_bytes() for p in data.glob("*/lock")}
        again = subprocess.run(
            [*OFFPAY, "network", "run", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=120,  # a guard against a hang: it must refuse, not wait for the lock
        )
        assert again.returncode == 2
        assert again.stdout == ""
        (line,) = again.stderr.strip().splitlines()
        assert "is already running" in line and f"pid {runner.pid}" in line
        assert {p: p.read_bytes() for p in data.glob("*/service.log")} == logs
        assert {p: p.read_bytes() for p in data.glob("*/lock")} == locks
        assert runner.poll() is None  # the running network runs on
        played = CliRunner().invoke(app, ["demo", "--network", str(data)])
        assert played.exit_code == 0, played.output[-3000:]
    assert runner.returncode == 0


def test_demo_against_a_network_that_is_not_running_names_the_service(tmp_path: Path) -> None:
    data = tmp_path / "offpay-network"
    assert CliRunner().invoke(app, ["network", "init", "--data", str(data)]).exit_code == 0
    url = json.loads((data / "network.json").read_text())["urls"]["central-bank"]
    result = CliRunner().invoke(app, ["demo", "--network", str(data)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"central-bank does not answer at {url}; is the network running?")
