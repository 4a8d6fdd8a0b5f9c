"""The console's web app: pages rendered on the server (Jinja2), panels that htmx asks for
again every few seconds, forms whose answer is one line. Every read and every action goes to
the parties over HTTP (:mod:`offpay.console.desk`, :mod:`offpay.console.lab`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from offpay.console.desk import Desk, policy_fields, waiting
from offpay.console.evidence import plain, settled_payment
from offpay.console.lab import LAB_ATTACKS, Lab
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.datadir import CENTRAL, NetworkConfig

HERE = Path(__file__).parent
POLL = "every 2s"  # how often a panel is asked for again
log = logging.getLogger("offpay.console")

Text = Annotated[str, Form()]  # always sent by the page
Blank = Annotated[str, Form()]  # may be left empty: the action says what is missing


def one_line(exc: BaseException) -> str:
    """What a person reads of a refusal: its message's first line, never a traceback."""
    if isinstance(exc, OffpayError):
        text = exc.message
    else:
        log.exception("console action failed")
        text = f"the console could not do that ({type(exc).__name__}); see its log"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def create_console(config: NetworkConfig) -> FastAPI:
    """The console of the network in ``config.folder``."""
    desk, lab = Desk(config), Lab(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        desk.close()
        lab.close()

    app = FastAPI(
        title="offpay console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    app.state.desk, app.state.lab = desk, lab

    def money(minor: int | None) -> str:
        return "" if minor is None else str(Money(minor, config.currency))

    templates.env.filters["money"] = money
    templates.env.filters["pretty"] = lambda value: json.dumps(value, indent=1, ensure_ascii=False)
    common = {
        "banks": config.banks,
        "central": CENTRAL,
        "urls": config.urls,
        "currency": config.currency,
        "poll": POLL,
    }

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {**common, **context})

    def panel(request: Request, name: str, read: Callable[[], dict[str, Any]]) -> HTMLResponse:
        try:
            context = read()
        except Exception as exc:  # a panel that cannot be read says why, in one line
            return page(request, "parts/unreadable.html", error=one_line(exc))
        return page(request, name, **context)

    def answer(request: Request, act: Callable[[], str]) -> HTMLResponse:
        try:
            message = act()
        except Exception as exc:
            response = page(request, "parts/result.html", ok=False, message=one_line(exc))
            response.status_code = 400
            return response
        return page(request, "parts/result.html", ok=True, message=message)

    @app.get("/v1/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "service": "console"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    # -- the operator console --------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def console(request: Request) -> HTMLResponse:
        return page(request, "console.html", fields=policy_fields())

    @app.get("/parts/conservation", response_class=HTMLResponse)
    def conservation(request: Request) -> HTMLResponse:
        def read() -> dict[str, Any]:
            c = desk.conservation()
            difference = c.audit.issued.minor - c.audit.held.minor
            return {"c": c.record(), "line": c.line(), "difference": difference}

        return panel(request, "parts/conservation.html", read)

    @app.get("/parts/central", response_class=HTMLResponse)
    def central(request: Request) -> HTMLResponse:
        return panel(request, "parts/central.html", lambda: {"books": desk.central()})

    @app.get("/parts/bank/{name}", response_class=HTMLResponse)
    def bank(request: Request, name: str) -> HTMLResponse:
        def read() -> dict[str, Any]:
            books = desk.bank(name)
            now = dt.datetime.now(dt.UTC)
            for row in books["pending"]:
                row["waited"] = waiting(row["since"], now)
            blocked = [
                {**d, "customer": c["name"]}
                for c in books["customers"]
                for d in c["devices"]
                if d["status"] != "active"
            ]
            return {"books": books, "blocked": blocked}

        return panel(request, "parts/bank.html", read)

    @app.get("/payment", response_class=HTMLResponse)
    def payment(request: Request, tx: str = "") -> HTMLResponse:
        def read() -> dict[str, Any]:
            records = desk.payment(tx)
            digests = {
                row["evidence"]
                for record in records.values()
                for step in ("debit", "credit")
                if (row := record.get(step)) is not None
            }
            # The evidence as the intermediaries settled it; a payment no intermediary has
            # settled yet may still sit in a card of the lab.
            signed, source = settled_payment(records), "as an intermediary settled it"
            if signed is None:
                signed, source = (
                    lab.signed_payment(bytes.fromhex(tx.strip().lower())),
                    "as a card of the lab holds it",
                )
            return {
                "source": source,
                "tx": tx.strip().lower(),
                "records": records,
                "digests": sorted(digests),
                "signed": None if signed is None else plain(signed),
                "matches": signed is not None and signed.digest.hex() in digests,
            }

        return panel(request, "parts/payment.html", read)

    @app.post("/admin/policy", response_class=HTMLResponse)
    async def publish_policy(request: Request) -> HTMLResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        return answer(
            request,
            lambda: desk.publish_policy(form.get("bank", ""), form.get("token", ""), form),
        )

    @app.post("/admin/block", response_class=HTMLResponse)
    def block(request: Request, bank: Text, token: Blank = "", device: Blank = "") -> Any:
        return answer(request, lambda: desk.block(bank, token, device))

    @app.post("/admin/release", response_class=HTMLResponse)
    def release(request: Request, bank: Text, token: Blank = "") -> HTMLResponse:
        return answer(request, lambda: desk.release_expired(bank, token))

    # -- the device lab ---------------------------------------------------------------------

    @app.get("/lab", response_class=HTMLResponse)
    def lab_page(request: Request) -> HTMLResponse:
        return page(request, "lab.html", attacks=LAB_ATTACKS)

    @app.get("/parts/devices", response_class=HTMLResponse)
    def devices(request: Request) -> HTMLResponse:
        return panel(
            request,
            "parts/devices.html",
            lambda: {"devices": lab.devices(), "offline": lab.offline},
        )

    @app.get("/parts/attacks", response_class=HTMLResponse)
    def attack_reports(request: Request) -> HTMLResponse:
        return page(request, "parts/attacks.html", reports=lab.reports)

    @app.post("/lab/issue", response_class=HTMLResponse)
    def issue(request: Request, bank: Text, amount: Blank = "") -> HTMLResponse:
        return answer(request, lambda: lab.issue(bank, amount))

    @app.post("/lab/open", response_class=HTMLResponse)
    def open_customer(
        request: Request, name: Blank = "", bank: Text = "", kind: Text = "", pin: Text = ""
    ) -> HTMLResponse:
        return answer(request, lambda: lab.open(name.strip(), bank, kind, pin))

    @app.post("/lab/switch", response_class=HTMLResponse)
    def switch(request: Request, name: Text) -> HTMLResponse:
        return answer(request, lambda: lab.switch(name))

    @app.post("/lab/fund", response_class=HTMLResponse)
    def fund(request: Request, name: Text, amount: Blank = "") -> HTMLResponse:
        return answer(request, lambda: lab.fund(name, amount))

    @app.post("/lab/top-up", response_class=HTMLResponse)
    def top_up(request: Request, name: Text, amount: Blank = "", pin: Blank = "") -> Any:
        return answer(request, lambda: lab.top_up(name, amount, pin))

    @app.post("/lab/defund", response_class=HTMLResponse)
    def defund(request: Request, name: Text, amount: Blank = "", pin: Blank = "") -> Any:
        return answer(request, lambda: lab.defund(name, amount, pin))

    @app.post("/lab/sync", response_class=HTMLResponse)
    def sync(request: Request, name: Text, pin: Blank = "") -> HTMLResponse:
        return answer(request, lambda: lab.sync(name, pin))

    @app.post("/lab/pay-shop", response_class=HTMLResponse)
    def pay_shop(
        request: Request, payer: Text, shop: Text, amount: Blank = "", pin: Blank = ""
    ) -> HTMLResponse:
        return answer(request, lambda: lab.pay_shop(payer, shop, amount, pin))

    @app.post("/lab/ask", response_class=HTMLResponse)
    def ask(request: Request, payer: Text, payee: Text, amount: Blank = "") -> HTMLResponse:
        try:
            asked_id, asked = lab.ask(payer, payee, amount)
        except Exception as exc:
            response = page(request, "parts/result.html", ok=False, message=one_line(exc))
            response.status_code = 400
            return response
        return page(request, "parts/asked.html", ask_id=asked_id, asked=asked)

    @app.post("/lab/confirm", response_class=HTMLResponse)
    def confirm(
        request: Request,
        ask_id: Text,
        code: Blank = "",
        pin: Blank = "",
        payee_pin: Blank = "",
    ) -> HTMLResponse:
        return answer(request, lambda: lab.confirm(ask_id, code, pin, payee_pin))

    @app.get("/parts/tokens", response_class=HTMLResponse)
    def token_wallets(request: Request) -> HTMLResponse:
        return panel(request, "parts/tokens.html", lambda: {"wallets": lab.token_wallets()})

    @app.post("/lab/tokens/open", response_class=HTMLResponse)
    def token_open(request: Request, name: Text) -> HTMLResponse:
        return answer(request, lambda: lab.token_open(name))

    @app.post("/lab/tokens/withdraw", response_class=HTMLResponse)
    def withdraw(request: Request, name: Text, amount: Blank = "") -> HTMLResponse:
        return answer(request, lambda: lab.withdraw(name, amount))

    @app.post("/lab/tokens/deposit", response_class=HTMLResponse)
    def deposit(request: Request, name: Text, amount: Blank = "") -> HTMLResponse:
        return answer(request, lambda: lab.deposit(name, amount))

    @app.post("/lab/tokens/transfer", response_class=HTMLResponse)
    def token_transfer(
        request: Request, payer: Text, payee: Text, amount: Blank = ""
    ) -> HTMLResponse:
        return answer(request, lambda: lab.token_transfer(payer, payee, amount))

    @app.post("/lab/tokens/split", response_class=HTMLResponse)
    def split(request: Request, name: Text, token: Blank = "", amount: Blank = "") -> Any:
        return answer(request, lambda: lab.split(name, token, amount))

    @app.post("/lab/tokens/merge", response_class=HTMLResponse)
    def merge(request: Request, name: Text, tokens: Blank = "") -> HTMLResponse:
        return answer(request, lambda: lab.merge(name, tokens))

    @app.post("/lab/attack", response_class=HTMLResponse)
    def attack(request: Request, name: Text) -> HTMLResponse:
        def act() -> str:
            r = lab.attack(name)
            return (
                f"{r.name}: {r.outcome.value}; loss {r.loss} within bound {r.bound}: "
                f"{'yes' if r.within_bound else 'NO'}; conserved: {'yes' if r.conserved else 'NO'}"
            )

        return answer(request, act)

    return app
