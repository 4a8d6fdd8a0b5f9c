"""Typed refusals.

Every refusal in offpay is an :class:`OffpayError` with a stable ``code`` (dotted, lower case,
never reused for another meaning) and a message a person understands. Devices carry the code
across the card interface, so a relay can re-raise the same typed error on its side.
"""

from __future__ import annotations


class OffpayError(Exception):
    """Base of every refusal. ``code`` is stable; ``message`` is for people."""

    code: str = "offpay.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class MoneyError(OffpayError):
    """An amount that cannot be parsed, is negative where it may not be, or overflows."""

    code = "money.invalid"


class EncodingError(OffpayError):
    """Bytes that are not a well-formed message of the expected type."""

    code = "wire.malformed"


class SignatureError(OffpayError):
    """A signature or certificate chain that does not verify."""

    code = "crypto.bad_signature"


class CertificateError(OffpayError):
    """A certificate that is not issued by the expected authority, or has the wrong role."""

    code = "crypto.bad_certificate"


class AddressError(OffpayError):
    """A message addressed to somebody else."""

    code = "wire.wrong_receiver"


class ReplayError(OffpayError):
    """A message that was already accepted once, or whose nonce or counter is stale."""

    code = "wire.replay"


class PolicyError(OffpayError):
    """A limits policy that is unsigned, from the wrong issuer, or older than the current one."""

    code = "policy.invalid"


class LimitExceeded(OffpayError):
    """A payment refused by a limit of the signed policy; ``limit`` names which."""

    code = "limit.exceeded"

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message, code=f"limit.{limit}")
        self.limit = limit


class PinError(OffpayError):
    """A wrong PIN, or a PIN that is blocked after too many tries."""

    code = "pin.wrong"

    def __init__(self, message: str, *, code: str | None = None, tries_left: int = 0) -> None:
        super().__init__(message, code=code)
        self.tries_left = tries_left


class DeviceStateError(OffpayError):
    """A command that the device cannot take in its present state."""

    code = "device.state"


class InsufficientFunds(OffpayError):
    """A debit larger than the balance it would come from."""

    code = "funds.insufficient"


class NotFound(OffpayError):
    """An account, device or record that does not exist."""

    code = "not_found"


class Refused(OffpayError):
    """A request the engine refuses for a business reason named by its code."""

    code = "refused"


class SealError(OffpayError):
    """Sealed storage that was altered, truncated, or belongs to another device or slot."""

    code = "seal.invalid"


class TokenError(OffpayError):
    """A token whose fields or history do not verify (a counterfeit, in FEDS 2025-105's
    words), or that cannot be used as asked."""

    code = "token.invalid"


class DoubleSpend(TokenError):
    """One token consumed by two different transitions; ``element`` signed both."""

    code = "token.double_spend"

    def __init__(
        self, message: str, *, code: str | None = None, token_id: bytes = b"", element: str = ""
    ) -> None:
        super().__init__(message, code=code)
        self.token_id = token_id
        self.element = element


# Codes arrive over the card interface and the network as text; this table turns them back into
# the class a caller can catch. Sub-codes such as ``limit.card_max_balance`` map by prefix.
_BY_PREFIX: dict[str, type[OffpayError]] = {
    "money": MoneyError,
    "wire.malformed": EncodingError,
    "wire.wrong_receiver": AddressError,
    "wire.replay": ReplayError,
    "crypto.bad_signature": SignatureError,
    "crypto": CertificateError,
    "policy": PolicyError,
    "pin": PinError,
    "device": DeviceStateError,
    "funds": InsufficientFunds,
    "not_found": NotFound,
    "seal": SealError,
    "token.double_spend": DoubleSpend,
    "token": TokenError,
}


def error_from_code(code: str, message: str) -> OffpayError:
    """Rebuild a typed error from its code and message, as received from a device or service."""
    if code.startswith("limit."):
        return LimitExceeded(code.removeprefix("limit."), message)
    for prefix, cls in _BY_PREFIX.items():
        if code == prefix or code.startswith(prefix + "."):
            return cls(message, code=code)
    return Refused(message, code=code)
