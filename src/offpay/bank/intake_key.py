"""The intermediary's encryption key (its *intake key*), and opening what devices seal to it
(issue 19, point 3; offpay.wire.sealed_upload).

Kept in the intermediary's own database, like the pseudonym key (offpay.bank.pseudonym_key),
so that every engine serving the same books opens what any of them handed out. Made when an
engine first opens the database; renewed by :meth:`IntakeKeys.rotate`, after which the
previous key still opens what devices sealed to it for a grace period: a device learns the new
key in the next instruction it receives, so the period should exceed the longest time a device
may stay offline. A message sealed to a key past its period is refused, as one sealed to a key
this intermediary never had; either way nothing changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from offpay.crypto.pki import Credential
from offpay.errors import SignatureError
from offpay.store import schema
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import IntakeKey
from offpay.wire.sealed_upload import open_sealed, sealed_to_intermediary

KEY_BYTES = 32
# How long a renewed key still opens what devices sealed to it, unless the rotation says.
DEFAULT_GRACE = dt.timedelta(days=90)


class IntakeKeys:
    """One engine's view of its database's intake keys. Each method reads the database on its
    own connection: call them outside another transaction (an in-memory database shares one
    connection, which returning it to the pool would roll back)."""

    def __init__(
        self,
        db: Engine,
        engine_id: str,
        institution: str,
        credential: Credential,
        random: Callable[[int], bytes],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.db = db
        self.engine_id = engine_id
        self.institution = institution
        self.credential = credential
        self.random = random
        self.clock = clock
        self._signed: dict[tuple[int, bytes], Signed[IntakeKey]] = {}
        if self._newest() is None:
            self._add(1)

    def _now(self) -> int:
        return int(self.clock().timestamp())

    def _newest(self) -> tuple[int, bytes] | None:
        t = schema.intake_keys
        with self.db.connect() as conn:
            row = conn.execute(
                select(t.c.version, t.c.public_key).order_by(t.c.version.desc()).limit(1)
            ).first()
        return None if row is None else (int(row.version), bytes(row.public_key))

    def _add(self, version: int) -> None:
        """A new key ``version``. Two engines adding the same version at once agree: the
        second one's insert fails and both use the first one's key."""
        private = X25519PrivateKey.from_private_bytes(self.random(KEY_BYTES))
        try:
            with self.db.begin() as conn:
                conn.execute(
                    insert(schema.intake_keys).values(
                        version=version,
                        private_key=private.private_bytes_raw(),
                        public_key=private.public_key().public_bytes_raw(),
                        created_at=self._now(),
                    )
                )
        except IntegrityError:
            pass  # another engine made it first

    def signed(self) -> Signed[IntakeKey]:
        """The current key, signed by this engine, for devices."""
        newest = self._newest()
        assert newest is not None  # made in __init__
        if newest not in self._signed:
            version, public = newest
            key = IntakeKey(self.engine_id, self.institution, version, public)
            self._signed = {newest: sign(key, self.credential)}  # type: ignore[dict-item]
        return self._signed[newest]

    def renewal(self, held: int | None) -> Signed[IntakeKey] | None:
        """The current key for a device that holds version ``held`` (None: no key), when it
        is newer; None when the device is up to date."""
        newest = self._newest()
        if newest is not None and (held is None or held < newest[0]):
            return self.signed()
        return None

    def rotate(self, grace: dt.timedelta = DEFAULT_GRACE) -> int:
        """Renew the key: devices get the new one in their next instruction; what they seal to
        the previous one still opens for ``grace``. Returns the new version."""
        newest = self._newest()
        assert newest is not None
        version = newest[0] + 1
        t = schema.intake_keys
        with self.db.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.version == newest[0], t.c.accepted_until.is_(None))
                .values(accepted_until=self._now() + int(grace.total_seconds()))
            )
        self._add(version)
        return version

    def open(self, data: bytes) -> bytes:
        """The signed message a device sealed to this intermediary, or ``data`` as it is when
        it came in clear (a device personalised before sealing); its own checks follow."""
        sealed = sealed_to_intermediary(data)
        if sealed is None:
            return data
        t = schema.intake_keys
        with self.db.connect() as conn:
            row = conn.execute(
                select(t.c.private_key, t.c.accepted_until).where(t.c.version == sealed.key_version)
            ).first()
        if row is not None and row.accepted_until is not None and row.accepted_until < self._now():
            row = None
        # Checked after the address, so that a message for another intermediary says so.
        if row is None and sealed.receiver == self.engine_id:
            raise SignatureError(
                f"the message is sealed to intake key {sealed.key_version}, which "
                f"{self.institution} does not accept (renewed long ago, or never made); "
                "the device needs its intermediary's current key, at a branch",
                code="crypto.intake_key_unknown",
            )
        return open_sealed(sealed, self.engine_id, b"" if row is None else bytes(row.private_key))
