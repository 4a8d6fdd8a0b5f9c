"""Value on its way between an intermediary's wallets and the central bank, outside
settlement: tokens minted or redeemed, liquidity-pool loans drawn or repaid.

Each move is keyed by the nonce of its request to the central bank. The audit asks the central
bank whether that request was carried out (its record of answered nonces) to know on which
side of the hop the value is while the move is open.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from offpay.store import schema

# Money leaves the wallet before the central bank acts on these; on the others (redeem, draw,
# fund), the central bank acts first and the wallet is credited afterwards. ``redeem-online``
# is money leaving an online wallet for the intermediary's reserve (``Intermediary.redeem``).
WALLET_FIRST = frozenset({"mint", "repay", "redeem-online"})


def open_move(conn: Connection, nonce: bytes, kind: str, amount: int) -> None:
    m = schema.central_moves
    if conn.execute(select(m.c.nonce).where(m.c.nonce == nonce)).first() is None:
        conn.execute(insert(m).values(nonce=nonce, kind=kind, amount=amount, done=False))


def close_move(conn: Connection, nonce: bytes) -> None:
    m = schema.central_moves
    conn.execute(update(m).where(m.c.nonce == nonce).values(done=True))


def in_transit(open_moves: list[tuple[str, int, bool]]) -> int:
    """Value in transit over ``(kind, amount, carried_out_by_central_bank)`` open moves."""
    return sum(
        amount for kind, amount, carried_out in open_moves if (kind in WALLET_FIRST) != carried_out
    )
