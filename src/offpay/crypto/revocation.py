"""The network's revocation list: devices (cards, terminals, token elements) that every other
device must refuse offline, signed by the central bank and versioned so that a hostile relay
cannot bring back an older, shorter list."""

from __future__ import annotations

from offpay.crypto.pki import Role, TrustStore
from offpay.wire.codec import Message, message
from offpay.wire.envelope import Signed, open_signed


@message("revocation-list")
class RevocationList(Message):
    """Signed by the central bank: every device revoked so far, in the order revoked."""

    sender: str
    version: int
    devices: tuple[str, ...]


def newer_revocations(
    signed: Signed[RevocationList] | None, trust: TrustStore, version: int
) -> RevocationList | None:
    """The list in ``signed`` if the central bank signed it and it is newer than ``version``;
    ``None`` if there is nothing newer. A forged list is a typed error, never applied."""
    if signed is None:
        return None
    listing, _ = open_signed(signed, RevocationList, trust, Role.NOTARY, receiver=None)
    if listing.version != len(listing.devices):
        from offpay.errors import CertificateError

        raise CertificateError("revocation list version does not match its length")
    return listing if listing.version > version else None
