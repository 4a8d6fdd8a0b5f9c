"""Screenshots of the console and the lab for the documentation, taken by the tooling of the
browser tests (Playwright on Debian's headless Chromium):

    python -m offpay.console.screenshots docs/

A fresh network in a temporary folder, every party and the console served on loopback
ports in this process; the lab opens a few people and a shop, plays a shop payment, a
person-to-person payment across intermediaries and a cloned card, then each page is shot.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from offpay.console.app import create_console
from offpay.console.browser import launch
from offpay.console.lab import Lab
from offpay.console.serve import console_url
from offpay.service.app import create_app
from offpay.service.datadir import NetworkConfig, free_port, init_network
from offpay.service.process import serve_in_thread
from offpay.service.serve import build, listening_context

WIDTH, HEIGHT = 1400, 900
SHOTS = {"console.png": "/", "lab.png": "/lab"}


@contextlib.contextmanager
def served(folder: Path) -> Iterator[tuple[NetworkConfig, str, Lab]]:
    """A new network in ``folder``: its parties and its console, served in threads."""
    config = init_network(folder, ("bank-a", "bank-b"))
    console = create_console(config)
    with contextlib.ExitStack() as stack:
        for name, party_url in config.urls.items():
            built = build(config, name, retry_every=-1)
            app = create_app(built.service, background=built.background)
            tls = listening_context(config, name)  # over TLS 1.3, as `offpay serve` would
            stack.enter_context(serve_in_thread(app, party_url, tls=tls))
        url = console_url("127.0.0.1", free_port())  # the parties' ports are taken by now
        stack.enter_context(serve_in_thread(console, url))
        yield config, url, console.state.lab


def stage(lab: Lab) -> str:
    """What the pictures show: money issued, people and shops, payments, tokens, an attack.
    Returns the id of a settled payment whose signed form the payer's card still holds."""
    for bank in ("bank-a", "bank-b"):
        lab.issue(bank, "20000")
    lab.open("alice", "bank-a", "person")
    lab.open("bob", "bank-b", "person")
    lab.open("corner-shop", "bank-b", "shop")
    lab.fund("alice", "1000")
    lab.top_up("alice", "500", "1234")
    lab.pay_shop("alice", "corner-shop", "42.50", "1234")
    ask_id, asked = lab.ask("alice", "bob", "25")
    lab.confirm(ask_id, asked.code, "1234", "1234")
    last = lab.pay_shop("alice", "corner-shop", "7.90", "1234")
    lab.sync("corner-shop", "1234")
    lab.token_open("alice")
    lab.token_open("bob")
    lab.withdraw("alice", "60")
    lab.token_transfer("alice", "bob", "15")
    lab.switch("bob")
    lab.attack("cloned-card")
    return last.rsplit("payment ", 1)[1].rstrip(")")


def take(folder: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as data, served(Path(data) / "net") as (_, url, lab):
        tx = stage(lab)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, base_url=url)
            for name, path in SHOTS.items():
                page.goto(path)
                page.wait_for_load_state("networkidle")
                page.locator("main table").first.wait_for()
                if path == "/":  # the trail of a payment, its signed evidence decoded
                    page.locator("#trail input[name=tx]").fill(tx)
                    page.locator("#trail button").click()
                    page.locator("#trail-result tr.step-credit").wait_for()
                    page.evaluate("window.scrollTo(0, 0)")  # the banner back on top
                target = folder / name
                page.screenshot(path=str(target), full_page=True)
                written.append(target)
            browser.close()
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m offpay.console.screenshots DIR", file=sys.stderr)
        return 2
    for path in take(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
