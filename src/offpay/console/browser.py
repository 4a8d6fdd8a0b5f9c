"""Headless Chromium from the Debian packages, driven by Playwright: for the browser tests
and the screenshots. Playwright's own browser download is never used (``playwright
install`` would fetch one): the Debian ``chromium`` runs with flags that keep it from
reaching out (no background networking, no component updates, no sync), so it works on an
air-gapped machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from offpay.errors import OffpayError

CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ("chromium", "chromium-driver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserUnavailable(OffpayError):
    code = "console.no_browser"


def installed() -> bool:
    return CHROMIUM.is_file() and shutil.which("chromedriver") is not None


def install() -> None:
    """``apt-get install chromium chromium-driver`` (root only), as the tests install
    PostgreSQL; a failure says what to run."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserUnavailable(
            "Chromium is missing; install it with `apt-get install chromium chromium-driver`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise BrowserUnavailable(f"`{' '.join(command)}` failed: {' '.join(tail)}")


def launch(playwright: Any) -> Any:
    """A headless Chromium browser (Playwright's ``Browser``) on the Debian executable."""
    if not CHROMIUM.is_file():
        raise BrowserUnavailable(f"no Chromium at {CHROMIUM}: `offpay` needs Debian's chromium")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(FLAGS)
    )
