"""``offpay play SCRIPT.toml``: a scenario written once and replayed, in this process or
against a running network. A script is a list of steps, the same verbs as the commands, each
with the outcome it expects: ``ok`` or the code of the refusal (``limit.card_max_balance``)::

    [network]                   # optional: how to make a fresh network in this process
    liquidity = "queue"         # the keys of `offpay network init --config`
    [network.limits]
    card_max_offline_transactions = 2

    [[steps]]
    do = "issue"
    bank = "bank-a"
    amount = "SEK 10000"

    [[steps]]
    do = "pay-shop"
    payer = "alice"
    shop = "shop1"
    amount = "SEK 5000"
    expect = "funds.insufficient"

After every step the conservation audit runs; a step whose outcome matched but after which
money is not conserved does not match. A script is checked whole before the first step runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from rich.console import Console
from rich.markup import escape

from offpay.drive.workbench import DEFAULT_PIN, Workbench, workbench
from offpay.errors import OffpayError
from offpay.money import parse_money
from offpay.service.datadir import NETWORK_FILE, init_network
from offpay.service.network_settings import Limits, NetworkSettings, checked
from offpay.toml_input import InputFileError, read_toml, validated, where

Text = Annotated[str, Field(min_length=1, max_length=80)]
Expect = Annotated[str, Field(pattern=r"^(ok|[a-z_]+(\.[a-z0-9_]+)+)$")]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expect: Expect = "ok"


class Amounted(_Step):
    amount: Text

    @field_validator("amount")
    @classmethod
    def _parses(cls, value: str) -> str:
        """Refused here, before the first step runs, not when the step comes."""
        try:
            parse_money(value)
        except OffpayError as exc:
            raise ValueError(exc.message) from None
        return value


class Issue(Amounted):
    do: Literal["issue"]
    bank: Text

    def run(self, w: Workbench) -> str:
        return w.issue(self.bank, self.amount)


class CustomerOpen(_Step):
    do: Literal["customer-open"]
    name: Text
    bank: Text
    merchant: bool = False

    def run(self, w: Workbench) -> str:
        return w.open_customer(self.name, self.bank, merchant=self.merchant)


class CardIssue(_Step):
    do: Literal["card-issue"]
    name: Text
    pin: Text = DEFAULT_PIN

    def run(self, w: Workbench) -> str:
        return w.issue_card(self.name, self.pin)


class TerminalIssue(_Step):
    do: Literal["terminal-issue"]
    name: Text

    def run(self, w: Workbench) -> str:
        return w.issue_terminal(self.name)


class Fund(Amounted):
    do: Literal["fund"]
    name: Text

    def run(self, w: Workbench) -> str:
        return w.fund(self.name, self.amount)


class TopUp(Amounted):
    do: Literal["top-up"]
    name: Text
    pin: Text = DEFAULT_PIN

    def run(self, w: Workbench) -> str:
        return w.top_up(self.name, self.amount, self.pin)


class Defund(Amounted):
    do: Literal["defund"]
    name: Text
    pin: Text = DEFAULT_PIN

    def run(self, w: Workbench) -> str:
        return w.defund(self.name, self.amount, self.pin)


class PayShop(Amounted):
    do: Literal["pay-shop"]
    payer: Text
    shop: Text
    pin: Text = DEFAULT_PIN

    def run(self, w: Workbench) -> str:
        return w.pay_shop(self.payer, self.shop, self.amount, self.pin)


class Pay(Amounted):
    do: Literal["pay"]
    payer: Text
    payee: Text
    pin: Text = DEFAULT_PIN
    payee_pin: Text = DEFAULT_PIN
    code: Text | None = None  # what the payer confirms; the payee's phone's by default

    def run(self, w: Workbench) -> str:
        return w.pay(self.payer, self.payee, self.amount, self.pin, self.payee_pin, self.code)


class Sync(_Step):
    do: Literal["sync"]
    name: Text
    pin: Text = DEFAULT_PIN

    def run(self, w: Workbench) -> str:
        return w.sync(self.name, self.pin)


class Lost(_Step):
    do: Literal["lost"]
    name: Text

    def run(self, w: Workbench) -> str:
        return w.lost(self.name)


class PolicyPublish(_Step):
    do: Literal["policy-publish"]
    bank: Text
    version: Annotated[int, Field(ge=1)] | None = None
    limits: Limits

    def run(self, w: Workbench) -> str:
        return w.publish_limits(self.bank, self.limits.given(), self.version)


Step = Annotated[
    Issue
    | CustomerOpen
    | CardIssue
    | TerminalIssue
    | Fund
    | TopUp
    | Defund
    | PayShop
    | Pay
    | Sync
    | Lost
    | PolicyPublish,
    Field(discriminator="do"),
]
VERBS = (
    "issue, customer-open, card-issue, terminal-issue, fund, top-up, defund, pay-shop, pay, "
    "sync, lost, policy-publish"
)


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: NetworkSettings | None = None
    steps: list[Any] = Field(min_length=1)


_STEP = TypeAdapter(Step)


def parse_script(data: dict[str, Any], source: str) -> tuple[NetworkSettings | None, list[Step]]:
    """The script's network settings and steps, or one :class:`InputFileError` naming the
    step (counted from 1) and its field."""
    script = validated(Script, data, source)
    steps = []
    for number, raw in enumerate(script.steps, 1):
        if not isinstance(raw, dict) or "do" not in raw:
            raise InputFileError(f"{source}: step {number}: say what it does: do = one of {VERBS}")
        try:
            steps.append(_STEP.validate_python(raw))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = tuple(first["loc"])
            field = where(loc[1:]) if len(loc) > 1 else "do"
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "union_tag_invalid":
                message = f"unknown step {raw['do']!r}; one of {VERBS}"
            raise InputFileError(
                f"{source}: step {number} ({raw['do']}): {field}: {message}"
            ) from None
    if script.network is not None:
        checked(script.network)
    return script.network, steps


def load_script(path: Path) -> tuple[NetworkSettings | None, list[Step]]:
    return parse_script(read_toml(path), str(path))


ORDER = ("name", "payer", "payee", "shop", "bank", "amount", "version", "limits")


def describe(step: Step) -> str:
    """A step as the command that does it would read: ``pay-shop alice shop1 SEK 25``."""
    fields = step.model_dump(exclude_none=True)
    words = [step.do]
    for key in ORDER:
        value = fields.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
        if value is not None:
            words.append(str(value))
    if fields.get("merchant"):
        words.append("(merchant)")
    return " ".join(words)


@contextlib.contextmanager
def _folder(data: Path | None, settings: NetworkSettings | None) -> Iterator[Path]:
    """The in-process network's folder: ``data``, or a fresh temporary one; a network is
    made in it from ``settings`` if it holds none."""
    with contextlib.ExitStack() as stack:
        folder = (
            data
            if data is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="offpay-play-")))
        )
        if not (folder / NETWORK_FILE).exists():
            s = settings or NetworkSettings()
            init_network(
                folder,
                s.banks,
                algorithm=s.algorithm,
                liquidity=s.liquidity,
                pool=s.pool,
                limits=s.limits.given(),
            )
        yield folder


def play_script(
    script: tuple[NetworkSettings | None, list[Step]],
    console: Console,
    *,
    data: Path | None = None,
    network: Path | None = None,
) -> bool:
    """Run every step, print each with its outcome; True if every outcome matched."""
    settings, steps = script
    with contextlib.ExitStack() as stack:
        if network is not None:
            folder, served = network, True
            if settings is not None:
                console.print(
                    "[dim]the script's [network] table is not used: the network runs[/dim]"
                )
        else:
            folder, served = stack.enter_context(_folder(data, settings)), False
        bench = stack.enter_context(workbench(folder, served=served))
        matched = 0
        for number, step in enumerate(steps, 1):
            try:
                said = step.run(bench)
                outcome = "ok"
            except OffpayError as exc:
                said, outcome = exc.message, exc.code
            bench.save()
            conservation = bench.conservation()
            ok = outcome == step.expect and conservation.balanced
            matched += ok
            mark = "[green]matched[/green]" if ok else "[red]DID NOT MATCH[/red]"
            console.print(
                f"{number:>3}. {escape(describe(step))}: {escape(outcome)} "
                f"(expected {escape(step.expect)}) {mark}"
            )
            console.print(f"     [dim]{escape(said)}[/dim]")
            if not conservation.balanced:
                console.print(f"     [red]{escape(conservation.line())}[/red]")
        console.print(f"{matched} of {len(steps)} steps matched")
        return matched == len(steps)
