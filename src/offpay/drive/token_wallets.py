"""People's token wallets (the "sign once" token scheme, FEDS 2025-105) for the workbench:
a secure element each, driven through the phone's token wallet app
(:class:`~offpay.tokens.app.TokenWalletApp`) over the workbench's transport, so withdrawals
and deposits reach the intermediary as they would from a phone (over HTTP against a served
network). Transfers are the three-phase offline protocol of :mod:`offpay.tokens.transfer`
between two elements; split and merge happen inside one element.

The elements live in this process only: a token element has no sealed image to keep in the
data folder yet, so a restart of the process that holds them loses their tokens (the mint
still counts them outstanding, and the audit says so)."""

from __future__ import annotations

from dataclasses import dataclass

from offpay.drive.workbench import DriveError, Workbench
from offpay.money import Money
from offpay.tokens.app import TokenWalletApp
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token
from offpay.tokens.transfer import ReceiverSession, SenderSession

ID_SHOWN = 8  # hex digits of a token id shown and accepted as its name


@dataclass(frozen=True)
class HeldToken:
    """A token as its holder's element shows it."""

    id: str
    value: Money
    ancestry: int


def short(token: Token) -> str:
    return token.id.hex()[:ID_SHOWN]


class TokenWallets:
    """Every person's token element, by name."""

    def __init__(self) -> None:
        self.elements: dict[str, TokenElement] = {}

    def open(self, bench: Workbench, name: str) -> str:
        """The person's intermediary certifies a new secure element for them."""
        party = bench.party(name, "person")
        if name in self.elements:
            raise DriveError(f"{name} has a token wallet already", code="drive.has_wallet")
        element = TokenElement.manufacture(bench.net.config.algorithm)
        element_id = bench.net.issue_element(party.bank, party.customer_id, element)
        self.elements[name] = element
        return f"{party.bank} provisioned token element {element_id} for {name}"

    def element(self, name: str) -> TokenElement:
        if name not in self.elements:
            raise DriveError(
                f"{name} has no token wallet yet: open one first", code="drive.no_wallet"
            )
        return self.elements[name]

    def app(self, bench: Workbench, name: str) -> TokenWalletApp:
        party = bench.party(name, "person")
        return TokenWalletApp(self.element(name), party.bank, bench.net.transport)

    def held(self, name: str) -> list[HeldToken]:
        element = self.element(name)
        return [
            HeldToken(short(t), t.value, element.verify(t).length)
            for t in sorted(element.tokens(), key=lambda t: (t.value.minor, t.id))
        ]

    def _token(self, name: str, shown: str) -> bytes:
        wanted = shown.strip().lower()
        found = [
            t.id for t in self.element(name).tokens() if wanted and t.id.hex().startswith(wanted)
        ]
        if len(found) != 1:
            raise DriveError(
                f"{name}'s element holds {'no' if not found else 'more than one'} token "
                f"{shown!r}; name one by the first digits of its id",
                code="drive.unknown_token",
            )
        return found[0]

    # -- online: through the intermediary -----------------------------------------------------

    def withdraw(self, bench: Workbench, name: str, amount: str) -> str:
        token = self.app(bench, name).withdraw(bench.money(amount))
        return f"{name} withdrew {token.value} from the online wallet as token {short(token)}"

    def deposit(self, bench: Workbench, name: str, amount: str) -> str:
        money = bench.money(amount)
        self.app(bench, name).deposit(money)
        return f"{name} deposited {money} in tokens back to the online wallet"

    # -- offline: inside an element, or between two ---------------------------------------------

    def split(self, bench: Workbench, name: str, token: str, amount: str) -> str:
        first, second = self.element(name).split(self._token(name, token), bench.money(amount))
        return f"{name}'s element split {token} into {first.value} and {second.value}"

    def merge(self, name: str, tokens: list[str]) -> str:
        merged = self.element(name).merge([self._token(name, t) for t in tokens])
        return f"{name}'s element merged {len(tokens)} tokens into {merged.value} ({short(merged)})"

    def transfer(self, bench: Workbench, payer: str, payee: str, amount: str) -> str:
        """The three phases, phone to phone: discovery (each element proves itself, both
        phones show a 6-digit code the people compare), verification (the payer offers a token,
        the payee's element checks its history and answers with an address), transfer (SignOnce
        to that address, and the payee's signed confirmation)."""
        if payer == payee:
            raise DriveError("a person cannot pay themselves", code="drive.same_party")
        money = bench.money(amount)
        sender = SenderSession(self.element(payer), money)
        receiver = ReceiverSession(self.element(payee), money)
        sender_proof = sender.on_hello(receiver.hello())
        receiver_proof = receiver.on_hello(sender.hello())
        sender.on_proof(receiver_proof)
        receiver.on_proof(sender_proof)
        sender.users_agree(receiver.code)  # the people read each other's phone
        receiver.users_agree(sender.code)
        address = receiver.on_offer(sender.offer())
        sender.on_confirmation(receiver.on_transfer(sender.on_address(address)))
        return (
            f"{payer} paid {money} in tokens to {payee} offline "
            f"(discovery code {sender.code} on both phones)"
        )
