"""Issue 17, points 1-4 in a real browser: Debian's headless Chromium, driven by Playwright,
plays through the console's pages against a network served over HTTP (every party and the
console on loopback ports), then the books are checked through the parties' own API."""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright import sync_api

from conftest import client_of, serve_party
from offpay.console import browser
from offpay.console.app import create_console
from offpay.console.serve import console_url
from offpay.service.app import create_app
from offpay.service.client import AdminClient
from offpay.service.datadir import CENTRAL, NetworkConfig, free_port, init_network
from offpay.service.process import serve_in_thread
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import build

expect = sync_api.expect
WAIT_MS = 120_000  # an upper bound on any wait for the page, never a timing assertion


def _install_chromium_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Install Chromium if missing, one test process at a time (xdist workers share the
    parent of their base temporary folder, and apt-get allows one install)."""
    if browser.installed():
        return
    lock = tmp_path_factory.getbasetemp().parent / "offpay-chromium-install.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not browser.installed():
            try:
                browser.install()
            except browser.BrowserUnavailable as exc:
                pytest.fail(f"these tests need Chromium: {exc.message}", pytrace=False)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NetworkConfig, str]]:
    """The parties and the console, each served on its own loopback port."""
    config = init_network(tmp_path_factory.mktemp("console"), ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        for name in config.urls:
            built = build(config, name, retry_every=-1)
            stack.enter_context(
                serve_party(config, name, create_app(built.service, background=built.background))
            )
        url = console_url("127.0.0.1", free_port())  # the parties' ports are taken by now
        stack.enter_context(serve_in_thread(create_console(config), url))
        yield config, url


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _install_chromium_once(tmp_path_factory)
    expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as playwright:
        launched = browser.launch(playwright)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(chromium: Any, network: tuple[NetworkConfig, str]) -> Iterator[Any]:
    context = chromium.new_context(base_url=network[1])
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


# -- playing through the pages ----------------------------------------------------------------


def act(page: Any, form: str, values: dict[str, str], *, button: str | None = None) -> str:
    """Fill ``form``, press its button (or the one named), wait for the one-line answer."""
    page.evaluate("document.querySelector('#result').innerHTML = ''")
    scope = page.locator(f"#{form}")
    for name, value in values.items():
        field = scope.locator(f"[name={name}]")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    if button is None:
        scope.locator("button[type=submit]").first.click()
    else:
        scope.get_by_role("button", name=button).click()
    answer = page.locator("#result p")
    expect(answer).to_have_count(1)
    return str(answer.inner_text())


def ok(page: Any, form: str, values: dict[str, str], **kw: str) -> str:
    text = act(page, form, values, **kw)
    assert page.locator("#result p.ok").count() == 1, text
    return text


def refused(page: Any, form: str, values: dict[str, str], **kw: str) -> str:
    text = act(page, form, values, **kw)
    assert page.locator("#result p.error").count() == 1, text
    assert "\n" not in text.strip() and "Traceback" not in text
    return text


def open_people(page: Any, *people: tuple[str, str, str]) -> None:
    page.goto("/lab")
    for bank in ("bank-a", "bank-b"):
        ok(page, "issue-form", {"amount": "10000", "bank": bank})
    for name, bank, kind in people:
        ok(page, "open-form", {"name": name, "bank": bank, "kind": kind, "pin": "1234"})


def tx_of(text: str) -> str:
    found = re.search(r"payment ([0-9a-f]{32})", text)
    assert found is not None, text
    return found.group(1)


# -- reading the books through the API ------------------------------------------------------


def admin_get(config: NetworkConfig, party: str, path: str) -> dict[str, Any]:
    client = AdminClient(
        config.urls[party], config.admin_token(party), client=client_of(config, party)
    )
    try:
        return dict(client.get(path))
    finally:
        client.close()


def bank_books(config: NetworkConfig, bank: str) -> dict[str, Any]:
    return admin_get(config, bank, "/v1/admin/books")


def wallet(config: NetworkConfig, bank: str, customer: str, kind: str) -> int:
    for c in bank_books(config, bank)["customers"]:
        if c["name"] == customer:
            return int(c["wallets"].get(kind, 0))
    raise AssertionError(f"{customer} is not a customer of {bank}")


def conserved(config: NetworkConfig) -> None:
    net = RemoteNetwork(config)
    try:
        audit, problems = net.audit()
    finally:
        net.close()
    assert audit.balanced and not problems, (audit, problems)


# -- the tests --------------------------------------------------------------------------------


def test_a_shop_payment_and_its_sync_through_the_pages(
    page: Any, network: tuple[NetworkConfig, str]
) -> None:
    config, _ = network
    # The console, opened before the shop exists, shows it without a reload.
    console = page.context.new_page()
    console.goto("/")
    expect(console.locator("#bank-bank-b .customers")).to_be_visible()
    assert "kiosk" not in console.locator("#bank-bank-b").inner_text()
    open_people(page, ("ann", "bank-a", "person"), ("kiosk", "bank-b", "shop"))
    expect(console.locator("#bank-bank-b .customers")).to_contain_text("kiosk")
    ok(page, "fund-form", {"name": "ann", "amount": "300"})
    ok(page, "card-form", {"name": "ann", "amount": "200", "pin": "1234"}, button="Top up")
    paid = ok(
        page, "shop-form", {"payer": "ann", "shop": "kiosk", "amount": "12.50", "pin": "1234"}
    )
    tx = tx_of(paid)
    # The card shows the payment in its offline log until it syncs.
    expect(page.locator("#device-ann .balance")).to_have_text("SEK 187.50")
    expect(page.locator("#device-ann")).to_contain_text(tx[:10])
    assert wallet(config, "bank-b", "kiosk", "merchant") == 0  # nothing settled offline
    ok(page, "card-form", {"name": "kiosk", "pin": ""}, button="Sync")
    ok(page, "card-form", {"name": "ann", "pin": "1234"}, button="Sync")
    expect(page.locator("#device-ann")).not_to_contain_text(tx[:10])

    assert wallet(config, "bank-b", "kiosk", "merchant") == 1250
    assert wallet(config, "bank-a", "ann", "online") == 10000
    assert wallet(config, "bank-a", "ann", "shadow") == 18750
    conserved(config)

    # The console shows the trail: the debit, the notary's record and the credit.
    page.goto("/")
    expect(page.locator("#conservation .conserved")).to_be_visible()
    page.locator("#trail input[name=tx]").fill(tx)
    page.locator("#trail button").click()
    trail = page.locator("#trail-result")
    expect(trail.locator("tr.step-debit")).to_contain_text("SEK 12.50")
    expect(trail.locator("tr.step-notary")).to_contain_text("bank-a → bank-b")
    expect(trail.locator("tr.step-credit")).to_contain_text("SEK 12.50")
    # The payer's card still holds it as its last payment: decoded, matching the books.
    expect(trail.locator(".evidence-match")).to_contain_text("matches the books")
    expect(trail.locator("#evidence")).to_contain_text('"message": "offline-payment"')
    expect(page.locator("#bank-bank-b .customers")).to_contain_text("kiosk")


def test_a_person_to_person_payment_across_intermediaries_with_the_code(
    page: Any, network: tuple[NetworkConfig, str]
) -> None:
    config, _ = network
    open_people(page, ("bea", "bank-a", "person"), ("cid", "bank-b", "person"))
    ok(page, "fund-form", {"name": "bea", "amount": "100"})
    ok(page, "card-form", {"name": "bea", "amount": "100", "pin": "1234"}, button="Top up")

    # A payer who types another code than the payee's phone shows is refused: nothing moves.
    page.locator("#ask-form [name=payer]").fill("bea")
    page.locator("#ask-form [name=payee]").fill("cid")
    page.locator("#ask-form [name=amount]").fill("40")
    page.locator("#ask-form button").click()
    shown = page.locator("#shown-code")
    expect(shown).to_have_text(re.compile(r"^\d{6}$"))
    code = shown.inner_text()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    refused(page, "confirm-form", {"code": wrong, "pin": "1234", "payee_pin": "1234"})
    expect(page.locator("#device-bea .balance")).to_have_text("SEK 100.00")

    page.locator("#ask-form button").click()
    expect(page.locator("#shown-code")).not_to_have_text(code)
    code = page.locator("#shown-code").inner_text()
    paid = ok(page, "confirm-form", {"code": code, "pin": "1234", "payee_pin": "1234"})
    assert "bea paid SEK 40.00 to cid" in paid
    expect(page.locator("#device-cid .balance")).to_have_text("SEK 40.00")
    expect(page.locator("#device-bea .balance")).to_have_text("SEK 60.00")

    # Offline, the payee cannot sync; online again, it can, and the money settles.
    ok(page, "card-form", {"name": "cid"}, button="Online / offline")
    expect(page.locator("#device-cid")).to_contain_text("offline")
    assert "offline" in refused(page, "card-form", {"name": "cid", "pin": "1234"}, button="Sync")
    ok(page, "card-form", {"name": "cid"}, button="Online / offline")
    ok(page, "card-form", {"name": "cid", "pin": "1234"}, button="Sync")
    ok(page, "card-form", {"name": "bea", "pin": "1234"}, button="Sync")
    assert wallet(config, "bank-b", "cid", "shadow") == 4000
    assert wallet(config, "bank-a", "bea", "shadow") == 6000
    conserved(config)

    # The notary's newest records, under their pseudonyms, lead to the payment's trail.
    tx = tx_of(paid)
    pseudonym = admin_get(config, "bank-a", f"/v1/admin/payments/{tx}")["debit"]["pseudonym"]
    page.goto("/")
    page.locator("#central-bank .notary a", has_text=pseudonym[:12]).click()
    trail = page.locator("#trail-result")
    expect(trail.locator("tr.step-notary")).to_contain_text("bank-a → bank-b")
    expect(trail.locator("tr.step-debit")).to_contain_text("SEK 40.00")
    expect(trail.locator("tr.step-credit")).to_contain_text("SEK 40.00")
    # The receipt the apps kept: the payee's card signed the request inside the payment.
    expect(trail.locator(".evidence-match")).to_contain_text("matches the books")
    expect(trail.locator("#evidence")).to_contain_text('"message": "payment-request"')
    expect(trail.locator("#evidence")).to_contain_text('"amount": "SEK 40.00"')


def test_a_cloned_card_attack_shows_detection_revocation_and_the_bound(
    page: Any, network: tuple[NetworkConfig, str]
) -> None:
    config, _ = network
    page.goto("/lab")
    page.evaluate("document.querySelector('#result').innerHTML = ''")
    page.locator("#attack-cloned-card").click()
    answer = page.locator("#result p.ok")
    expect(answer).to_contain_text("cloned-card: detected")
    expect(answer).to_contain_text("within bound")
    assert "within bound SEK" in answer.inner_text() and "conserved: yes" in answer.inner_text()
    expect(page.locator(".attack-report").first).to_contain_text("cloned-card")

    central = AdminClient(
        config.urls[CENTRAL], config.admin_token(CENTRAL), client=client_of(config, CENTRAL)
    )
    try:
        revoked = central.get("/v1/admin/books")["revoked"]
    finally:
        central.close()
    assert revoked, "the clone's card is on the revocation list"
    anomalies = [a for b in config.banks for a in bank_books(config, b)["anomalies"]]
    losses = [x for b in config.banks for x in bank_books(config, b)["losses"]]
    assert anomalies and losses
    assert all(x["amount"] <= x["bound"] for x in losses)
    conserved(config)

    page.goto("/")
    expect(page.locator("#revoked")).to_contain_text(revoked[0])
    device = anomalies[0]["device"]
    expect(page.locator("main .anomalies").filter(has_text=device).first).to_be_visible()
    expect(page.locator("main .losses").filter(has_text="within").first).to_be_visible()
    expect(page.locator("main .blocked").filter(has_text=device).first).to_be_visible()
    expect(page.locator("#conservation .conserved")).to_be_visible()


def test_bad_input_and_a_wrong_admin_token_get_one_line_and_change_nothing(
    page: Any, network: tuple[NetworkConfig, str]
) -> None:
    config, _ = network
    open_people(page, ("dee", "bank-a", "person"), ("stall", "bank-a", "shop"))
    before = bank_books(config, "bank-a")
    assert "amount" in refused(
        page, "shop-form", {"payer": "dee", "shop": "stall", "amount": "lots", "pin": "1234"}
    )
    assert "nobody named" in refused(page, "fund-form", {"name": "nobody", "amount": "5"})
    assert "taken" in refused(
        page, "open-form", {"name": "dee", "bank": "bank-a", "kind": "person", "pin": "1234"}
    )
    assert bank_books(config, "bank-a")["customers"] == before["customers"]

    page.goto("/")
    version = before["policy"]["version"]
    limits = {"bank": "bank-a", "card_max_offline_transactions": "7"}
    refused(page, "policy-form", {**limits, "token": "not-the-token"})
    assert "whole number" in refused(
        page,
        "policy-form",
        {**limits, "card_max_offline_transactions": "x", "token": config.admin_token("bank-a")},
    )
    assert bank_books(config, "bank-a")["policy"]["version"] == version
    published = ok(page, "policy-form", {**limits, "token": config.admin_token("bank-a")})
    assert f"version {version + 1}" in published
    policy = bank_books(config, "bank-a")["policy"]
    assert policy["card_max_offline_transactions"] == 7
    assert policy["card_max_balance"] == before["policy"]["card_max_balance"]  # unchanged

    dee_card = next(
        d["id"] for c in before["customers"] if c["name"] == "dee" for d in c["devices"]
    )
    refused(page, "block-form", {"bank": "bank-a", "device": dee_card, "token": "wrong"})
    ok(
        page,
        "block-form",
        {"bank": "bank-a", "device": dee_card, "token": config.admin_token("bank-a")},
    )
    expect(page.locator("#bank-bank-a .blocked")).to_contain_text(dee_card)
    released = ok(page, "release-form", {"bank": "bank-a", "token": config.admin_token("bank-a")})
    assert "released 0" in released  # blocked just now: its window has not passed
    conserved(config)


def test_the_token_scheme_through_the_pages(page: Any, network: tuple[NetworkConfig, str]) -> None:
    config, _ = network
    open_people(page, ("eve", "bank-a", "person"), ("fay", "bank-b", "person"))
    ok(page, "fund-form", {"name": "eve", "amount": "80"})
    for name in ("eve", "fay"):
        ok(page, "token-form", {"name": name}, button="Open token wallet")
    ok(page, "token-form", {"name": "eve", "amount": "50"}, button="Withdraw")
    ok(page, "token-form", {"name": "eve", "amount": "20"}, button="Withdraw")
    expect(page.locator("#wallet-eve .total")).to_have_text("SEK 70.00")
    assert "discovery code" in ok(
        page, "token-transfer-form", {"payer": "eve", "payee": "fay", "amount": "35"}
    )
    expect(page.locator("#wallet-fay .total")).to_have_text("SEK 35.00")
    expect(page.locator("#wallet-eve .total")).to_have_text("SEK 35.00")
    ids = page.locator("#wallet-eve .token-id").all_inner_texts()
    assert len(ids) >= 2
    ok(page, "token-merge-form", {"name": "eve", "tokens": " ".join(ids)})
    expect(page.locator("#wallet-eve .token-id")).to_have_count(1)
    one = page.locator("#wallet-eve .token-id").inner_text()
    ok(page, "token-split-form", {"name": "eve", "token": one, "amount": "5"})
    expect(page.locator("#wallet-eve .token-id")).to_have_count(2)
    refused(page, "token-form", {"name": "fay", "amount": "1000"}, button="Deposit")
    ok(page, "token-form", {"name": "fay", "amount": "35"}, button="Deposit")
    expect(page.locator("#wallet-fay .total")).to_have_text("SEK 0.00")
    assert wallet(config, "bank-b", "fay", "online") == 3500
    assert wallet(config, "bank-a", "eve", "online") == 1000
    conserved(config)
