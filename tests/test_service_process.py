"""A service process is ready when its health route answers; one that exits at start, or never
answers, is a failed start that names the service and leaves no process behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from offpay.service.datadir import free_port
from offpay.service.process import ServiceFailed, ServiceProcess


def _process(tmp_path: Path, code: str) -> ServiceProcess:
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    return ServiceProcess("bank-x", url, [sys.executable, "-c", code], tmp_path / "service.log")


def test_a_service_that_exits_at_start_is_a_failed_start_with_its_log(tmp_path: Path) -> None:
    process = _process(tmp_path, "print('no database here'); raise SystemExit(3)")
    with pytest.raises(ServiceFailed) as failed:
        process.start(timeout=30)
    assert failed.value.code == "service.not_started"
    assert failed.value.message.startswith("bank-x exited at start:")
    assert "no database here" in failed.value.message
    assert not process.running


def test_a_service_that_never_answers_is_stopped(tmp_path: Path) -> None:
    process = _process(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(ServiceFailed) as failed:
        process.start(timeout=0.5)
    assert failed.value.message.startswith("bank-x did not answer within")
    assert not process.running  # stopped, not left behind


def test_a_service_that_answers_is_ready(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    server = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/v1/health' else 404)\n"
        "        self.end_headers()\n"
        f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    process = ServiceProcess(
        "bank-x",
        f"http://127.0.0.1:{port}",
        [sys.executable, "-c", server],
        tmp_path / "service.log",
    )
    try:
        process.start(timeout=60)
        assert process.running
    finally:
        process.stop()
    assert not process.running
