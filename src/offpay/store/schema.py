"""Tables of the central bank and of an intermediary.

Exactly-once is a database constraint, never a Python check: a payment's id is the primary key
of the notary, of the payer intermediary's debits and of the payee intermediary's credits, so a
second settlement fails inside the database even when two syncs race. Balances carry a CHECK
that they never go negative.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)


def written_at() -> dt.datetime:
    """When a settlement record was written (wall clock, UTC): filled in by every insert,
    batched ones included, so that a payment's records can be read with their times."""
    return dt.datetime.now(dt.UTC)


def _recorded_at() -> Column[dt.datetime]:
    # Nullable: rows written before the column existed have no time.
    return Column("recorded_at", DateTime(timezone=True), nullable=True, default=written_at)


def _pseudonym() -> Column[bytes]:
    # What the notary knows the row's payment by (offpay.crypto.pseudonyms), so that an auditor
    # can join the books of both intermediaries and the notary's. Null: recorded before
    # pseudonyms (revision intermediary_0007), when the notary knew it by its id.
    return Column("pseudonym", LargeBinary(16), nullable=True, index=True)


# ---- central bank -----------------------------------------------------------------------------

central = MetaData()

institutions = Table(
    "institutions",
    central,
    Column("name", String(64), primary_key=True),
    Column("reserve", BigInteger, nullable=False),
    Column("holdings", BigInteger, nullable=False),
    CheckConstraint("reserve >= 0", name="reserve_not_negative"),
    CheckConstraint("holdings >= 0", name="holdings_not_negative"),
)

issuance = Table(
    "issuance",
    central,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("institution", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
)

# Each payment under the pseudonym and commitment its payer's intermediary sent
# (offpay.crypto.pseudonyms): never a device's id. Rows recorded before pseudonyms (revision
# central_0005) keep the payment's id and evidence digest in these columns.
notary = Table(
    "notary",
    central,
    Column("pseudonym", LargeBinary(16), primary_key=True),
    Column("commitment", LargeBinary(32), nullable=False),
    Column("payer_institution", String(64), nullable=False),
    Column("payee_institution", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("recorded_by", String(128), nullable=False),
    _recorded_at(),
)

# token scheme: what the minting service minted, what it saw consumed, what was redeemed
minted = Table(
    "minted_tokens",
    central,
    Column("id", LargeBinary(16), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("institution", String(64), nullable=False),
)

consumed = Table(
    "consumed_tokens",
    central,
    Column("id", LargeBinary(16), primary_key=True),
    Column("transition", LargeBinary(32), nullable=False),
    Column("element", String(128), nullable=False),
)

redeemed = Table(
    "redeemed_tokens",
    central,
    Column("id", LargeBinary(16), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("institution", String(64), nullable=False),
)

# Devices of any kind (card, terminal, token element) that the network must refuse; a row's
# position is the revocation list's version that first named it.
revoked_devices = Table(
    "revoked_devices",
    central,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("device", String(128), nullable=False, unique=True),
    Column("reason", String(256), nullable=False),
)

# The liquidity pool (policy ``pool``): money the central bank issued to lend against offline
# payments whose payer's incoming payments have not settled yet.
pool = Table(
    "liquidity_pool",
    central,
    Column("id", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("outstanding", BigInteger, nullable=False),
    Column("peak_outstanding", BigInteger, nullable=False),
    Column("drawn_total", BigInteger, nullable=False),
    CheckConstraint("available >= 0", name="pool_available_not_negative"),
    CheckConstraint("outstanding >= 0", name="pool_outstanding_not_negative"),
)

pool_loans = Table(
    "pool_loans",
    central,
    Column("loan_id", LargeBinary(16), primary_key=True),  # the payment the loan funded
    Column("institution", String(64), nullable=False),
    Column("drawn", BigInteger, nullable=False),
    Column("repaid", BigInteger, nullable=False),
    CheckConstraint("repaid <= drawn", name="loan_not_overpaid"),
)

central_seen = Table(
    "seen_requests",
    central,
    Column("sender", String(128), primary_key=True),
    Column("nonce", LargeBinary(32), primary_key=True),
    Column("response", LargeBinary, nullable=False),
)

# ---- intermediary -----------------------------------------------------------------------------

bank = MetaData()

customers = Table(
    "customers",
    bank,
    Column("id", String(128), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # person | merchant
)

accounts = Table(
    "accounts",
    bank,
    Column("id", String(160), primary_key=True),
    Column("customer_id", String(128), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # online | shadow | merchant
    Column("currency", String(3), nullable=False),
    Column("balance", BigInteger, nullable=False),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
)

devices = Table(
    "devices",
    bank,
    Column("id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),  # card | terminal
    Column("customer_id", String(128), nullable=False),
    Column("account_id", String(160), nullable=False),
    Column("status", String(16), nullable=False),  # active | blocked
    Column("blocked_at", DateTime(timezone=True), nullable=True),
    Column("last_session_no", Integer, nullable=False, default=0),
    Column("released", Boolean, nullable=False, default=False),  # shadow wallet given back
    Column("issued_no", Integer, nullable=False),  # last instruction number issued
    Column("last_seq", Integer, nullable=False),  # device counter last seen
    # When the intermediary last answered the device's sync (its own clock); None: never.
    Column("last_sync_at", DateTime(timezone=True), nullable=True),
)

instructions = Table(
    "instructions",
    bank,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(128), nullable=False, index=True),
    Column("instruction_no", Integer, nullable=False),
    Column("operation", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # issued | applied | superseded
    Column("payload", LargeBinary, nullable=False),
    # The journal's last row when the instruction was signed: the auditor rebuilds the shadow
    # wallet then from it. None on rows written before it was kept.
    Column("journal_through", BigInteger, nullable=True),
    # The card's signed confirmation that it applied this instruction, as it arrived.
    Column("confirmation", LargeBinary, nullable=True),
)

debits = Table(
    "debits",
    bank,
    Column("tx_id", LargeBinary(16), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("evidence", LargeBinary(32), nullable=False),
    Column("payment", LargeBinary, nullable=False),
    Column("notarised", Boolean, nullable=False),
    Column("credited", Boolean, nullable=False),
    _recorded_at(),
    _pseudonym(),
)

credits = Table(
    "credits",
    bank,
    Column("tx_id", LargeBinary(16), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("evidence", LargeBinary(32), nullable=False),
    # The signed payment and its request's id: a payee may decline the request after the
    # payment was credited (the payer synchronised first); the refund needs both.
    Column("payment", LargeBinary, nullable=True),
    Column("request_id", LargeBinary(16), nullable=True, index=True),
    _recorded_at(),
    _pseudonym(),
)

# Payment requests our payee devices declared declined (bank/refusal.py).
declines = Table(
    "declines",
    bank,
    Column("request_id", LargeBinary(16), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("declared_at", DateTime(timezone=True), nullable=False),
)

# Refunds of declined payments, keyed by the refund's own id; ``open`` while the payee's
# wallet cannot cover it yet. Its debit, notarisation and credit go through ``debits``.
refunds = Table(
    "refunds",
    bank,
    Column("refund_id", LargeBinary(16), primary_key=True),
    Column("tx_id", LargeBinary(16), nullable=False, unique=True),
    Column("device_id", String(128), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("open", Boolean, nullable=False),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True),
)

shortfalls = Table(
    "shortfalls",
    bank,
    Column("tx_id", LargeBinary(16), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("payment", LargeBinary, nullable=False),
    Column("open", Boolean, nullable=False),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=True),
)

# The payee's side of the pending-settlement queue: payments to our devices that the payer's
# intermediary holds until the payer's shadow wallet covers them.
awaited = Table(
    "awaited",
    bank,
    Column("tx_id", LargeBinary(16), primary_key=True),
    Column("device_id", String(128), nullable=False, index=True),
    Column("payer", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("open", Boolean, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
)

# What a cloned, rolled-back or stolen device cost, and the bound the limits policy puts on it.
losses = Table(
    "losses",
    bank,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(128), nullable=False, index=True),
    Column("tx_id", LargeBinary(16), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("bound", BigInteger, nullable=False),
    Column("detail", String(512), nullable=False),
)

# Loans from the central bank's liquidity pool, one per payment it funded.
pool_loans_held = Table(
    "pool_loans",
    bank,
    Column("loan_id", LargeBinary(16), primary_key=True),
    Column("device_id", String(128), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("outstanding", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # pending | drawn | refused
    Column("attempt", Integer, nullable=False),
    _pseudonym(),  # what the central bank knows the loan by
    CheckConstraint("outstanding >= 0", name="loan_outstanding_not_negative"),
)

# Repayments sent to the pool; ``done`` once the central bank confirmed.
pool_repays = Table(
    "pool_repays",
    bank,
    Column("nonce", LargeBinary(16), primary_key=True),
    Column("loan_id", LargeBinary(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("done", Boolean, nullable=False, default=False),
)

journal = Table(
    "journal",
    bank,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(160), nullable=False, index=True),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("reference", LargeBinary, nullable=True),
)

anomalies = Table(
    "anomalies",
    bank,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("device_id", String(128), nullable=True),
    Column("tx_id", LargeBinary(16), nullable=True),
    Column("detail", String(512), nullable=False),
)

bank_seen = Table(
    "seen_requests",
    bank,
    Column("sender", String(128), primary_key=True),
    Column("nonce", LargeBinary(32), primary_key=True),
    Column("response", LargeBinary, nullable=False),
)

vault_grants = Table(
    "vault_grants",
    bank,
    Column("owner", LargeBinary, primary_key=True),  # a vault ownership key handed out
    Column("element", String(128), nullable=False),  # the element it was handed to
)

# Value moving between this intermediary's wallets and the central bank outside settlement:
# tokens minted or redeemed, loans drawn from or repaid to the liquidity pool. A wallet-first
# move (mint, repay) is in transit until the central bank answers; a central-first move
# (redeem, draw) until the wallet is credited.
central_moves = Table(
    "central_moves",
    bank,
    Column("nonce", LargeBinary(16), primary_key=True),  # of the request to the central bank
    Column("kind", String(8), nullable=False),  # mint | redeem | draw | repay
    Column("amount", BigInteger, nullable=False),
    Column("done", Boolean, nullable=False),
)

reserve_moves = Table(
    "reserve_moves",
    bank,
    Column("reference", String(64), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),  # + funding, - redemption
    Column("state", String(16), nullable=False),  # pending | done | refused
)

policies = Table(
    "policies",
    bank,
    Column("version", Integer, primary_key=True),
    Column("signed", LargeBinary, nullable=False),
)


# The key this intermediary makes the notary's pseudonyms with (offpay.crypto.pseudonyms):
# one row, made when the engine first opens the database, never sent anywhere. It lives with
# the books because it must match them: the debit rows name what the notary knows them by.
pseudonym_key = Table(
    "pseudonym_key",
    bank,
    Column("id", Integer, primary_key=True),
    Column("key", LargeBinary(32), nullable=False),
    CheckConstraint("id = 1", name="one_pseudonym_key"),
)

# Issue 19, point 3: the intermediary's encryption keys, one row per version, the newest the
# current one. Devices seal their sessions and uploads to it (offpay.bank.intake_key); a
# renewed key's predecessor still opens what devices sealed to it until ``accepted_until``.
intake_keys = Table(
    "intake_keys",
    bank,
    Column("version", Integer, primary_key=True),
    Column("private_key", LargeBinary(32), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),  # Unix seconds, as devices' clocks
    Column("accepted_until", BigInteger, nullable=True),
)

# Every request of the central bank for a payment's evidence (a dispute), answered or not:
# who asked, when, why, about which pseudonym, and whether the evidence was handed over. The
# request's nonce is the key: a replayed request is refused (offpay.bank.disclosure).
disclosures = Table(
    "disclosures",
    bank,
    Column("nonce", LargeBinary(32), primary_key=True),
    Column("asked_by", String(128), nullable=False),
    Column("pseudonym", LargeBinary(16), nullable=False, index=True),
    Column("reason", String(512), nullable=False),
    Column("asked_at", DateTime(timezone=True), nullable=False),
    Column("disclosed", Boolean, nullable=False),
)


def _http_answers(metadata: MetaData) -> Table:
    """A party behind HTTP keeps its first answer per sender and idempotency key, so that a
    retried request gets the same bytes (service/idempotency.py)."""
    return Table(
        "http_answers",
        metadata,
        Column("sender", String(200), primary_key=True),
        Column("key", String(64), primary_key=True),
        Column("kind", String(64), nullable=False),
        Column("digest", LargeBinary(32), nullable=False),
        Column("status", Integer, nullable=False),
        Column("media_type", String(40), nullable=False),
        Column("body", LargeBinary, nullable=False),
        # When the answer was kept: answers older than the retention window are pruned
        # (offpay.service.retention; docs/retention.md).
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    )


central_http_answers = _http_answers(central)
bank_http_answers = _http_answers(bank)


def _watchdog_alarms(metadata: MetaData) -> Table:
    """The watchdog's alarms (service/watchdog.py): a party whose books disagree with
    themselves stops moving money until an operator clears the alarm; kept in the party's
    database so that a restart does not clear it."""
    return Table(
        "watchdog_alarms",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("raised_at", DateTime(timezone=True), nullable=False),
        Column("invariant", String(32), nullable=False),  # which one failed
        Column("detail", String(1000), nullable=False),
        Column("records", String(4000), nullable=False),  # JSON list of the record ids
        Column("cleared_at", DateTime(timezone=True), nullable=True),
        Column("clear_reason", String(500), nullable=True),
        Column("forced", Boolean, nullable=False, default=False),
    )


central_watchdog_alarms = _watchdog_alarms(central)
bank_watchdog_alarms = _watchdog_alarms(bank)

# Proof of liabilities (offpay/liabilities/): per period, the signed commitment an
# intermediary published, and each customer's leaf with its salt, so that the customer's
# inclusion proof for that period can be served later.
liability_commitments = Table(
    "liability_commitments",
    bank,
    Column("period", Integer, primary_key=True, autoincrement=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("signed", LargeBinary, nullable=False),
)

liability_leaves = Table(
    "liability_leaves",
    bank,
    Column("period", Integer, primary_key=True, autoincrement=False),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", String(128), nullable=False, index=True),
    Column("salt", LargeBinary(32), nullable=False),
    Column("online", BigInteger, nullable=False),
    Column("shadow", BigInteger, nullable=False),
    Column("merchant", BigInteger, nullable=False),
)
