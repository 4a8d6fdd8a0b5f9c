"""The fast executor of the balance scheme: the protocol's rules re-stated over state arrays and
compiled with numba, for millions of people. No Python object is made per payment.

Each rule follows the code it re-states, in the order that code applies it, because the
fidelity tests (``tests/test_sim_fidelity.py``) demand the same outcome for every event as the
real executor (:mod:`.real`), which plays the same events on real devices and databases:

* a card's and a terminal's checks in the order ``Card._pay``, ``Card._request_payment``,
  ``Card._receive`` and ``TerminalModule.request_payment`` / ``accept_payment`` make them, with
  the refusal code each gives; a PoS app or a payee's phone declines the request the card
  refused, and declines count against ``MAX_DECLINED`` until the next sync;
* a card's counter and offline log (entries cleared at each sync), its offline-received total,
  its funding receipts (policy ``receipts``: the newest incoming payments up to
  ``max_receipts``, nested ones counted);
* a sync (``Intermediary.sync_card``): blocked cards released after the window, a session that
  shows an older state refused (and a rolled-back card caught by a payment it never uploaded),
  the upload settled as the batch desk settles it (``bank/batch.py``: the plain payers' payments
  together, the rest one by one in the upload's order, other intermediaries' payers through
  their debit requests), the top-up, the payer's waiting payments retried in its own order, the
  card's new balance (what its waiting payments will take held back, the excess over the card
  limit swept to the online wallet), the revocation list, and the counter of the applied
  instruction checked against the payments received (a clone's);
* settlement one by one (``Intermediary.settle``): receipts settled first, then the debit and the
  notary, or a shortfall queued (under policy ``pool`` the gap borrowed once, bounded by what the
  payer card received offline minus what its loans still owe), the credit, and money reaching a
  card repaying its loans and then settling its waiting payments, recursively, in the order the
  engine does it;
* clones and rolled-back cards caught when their evidence reaches an intermediary (a counter
  used twice, a payment under a counter the card had passed, a payment under the counter of an
  applied instruction): blocked, revoked network-wide, the loss recorded with its bound;
* a card's clock (``CardState.clock``): the intermediary's signed time at each sync, moved
  forward by the payee's signed time in a request (a PoS app gives its module the simulated
  time, a payee card signs its own clock), with the day's payments and total that the daily
  limits and ``max_offline_hours`` read (``offpay.device.card.check_payment_limits``);
* declines of requests that a card paid after all (a terminal that refused the payment keeps the
  request open until its sync), and the refunds they cause.

Money conservation is checked in the model after every event: everything issued (online, shadow
and merchant wallets at the intermediaries, the pool not lent out) is held, and each
intermediary's wallets equal its holdings at the central bank; a violation raises
:class:`ConservationError`. Settlement in the model is synchronous, so nothing is in transit
between events.

The model's assumptions, where the protocol has more than the simulator plays: PINs are always
right; no message is lost; policies never change during a run; funding receipts are bounded by
``max_receipts`` and never by their byte budget (32 KiB; true for ``max_receipts`` up to about
12 with Ed25519 keys); the order in which money reaching several devices of one settlement batch
is handled is the devices' order by id, which the real executor makes equal to the person's
(merchant's) index within its intermediary.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

import numpy as np
from numba import njit

from offpay.device.card import MAX_OPEN_REQUESTS as _CARD_OPEN  # noqa: F401 - documented bound
from offpay.device.terminal import MAX_OPEN_REQUESTS as TERMINAL_OPEN
from offpay.errors import OffpayError
from offpay.sim.population.events import Events, Kind, World
from offpay.sim.population.outcomes import INDEX, Results
from offpay.sim.population.scenario import Scenario
from offpay.sim.population.traffic import calibrate_cards
from offpay.wire.messages import MAX_DECLINED, Liquidity


class ConservationError(OffpayError):
    """The model lost or created money: a rule moved it wrongly."""

    code = "audit.conservation"


class ModelError(OffpayError):
    code = "sim.model"


# -- constants the kernel reads (module globals are compile-time constants in numba) ---------

C_OK = INDEX["ok"]
C_UNREACHABLE = INDEX["offline.unreachable"]
C_CARD_N = INDEX["limit.card_max_offline_transactions"]
C_CARD_BAL = INDEX["limit.card_max_balance"]
C_NOT_SPENDABLE = INDEX["limit.card_received_not_spendable"]
C_TERM_N = INDEX["limit.terminal_max_offline_payments"]
C_TERM_RECV = INDEX["limit.terminal_max_received"]
C_FUNDS = INDEX["funds.insufficient"]
C_DEV_REVOKED = INDEX["device.revoked"]
C_BUSY = INDEX["device.busy"]
C_BLOCKED = INDEX["device.blocked"]
C_STALE = INDEX["device.stale_session"]
C_ROLLED = INDEX["device.rolled_back"]
C_CRYPTO_REVOKED = INDEX["crypto.revoked"]
C_DUPLICATE = INDEX["wire.replay.duplicate"]
C_PAY_MAX = INDEX["limit.payment_max"]
C_SPENT = INDEX["limit.card_max_offline_spent"]
C_DAY_N = INDEX["limit.card_max_daily_payments"]
C_DAY_SPENT = INDEX["limit.card_max_daily_spent"]
C_HOURS = INDEX["limit.max_offline_hours"]
MINUTES_A_DAY = 1440  # the card's day is its clock // 86400 s; minute 0 is a UTC midnight
C_DRIFT = INDEX["refused"]  # device.counter_drift: unreachable here (the stale check comes first)

T_OPEN_MAX = TERMINAL_OPEN
DECLINED_MAX = MAX_DECLINED

K_SHOP, K_P2P, K_ONLINE, K_SHOP_ONLINE = int(Kind.SHOP), int(Kind.P2P), int(Kind.ONLINE), 3
K_CLONE, K_SNAPSHOT, K_ROLLBACK = int(Kind.CLONE), int(Kind.SNAPSHOT), int(Kind.ROLLBACK)
K_CLONE_SHOP, K_ROLLED_SHOP = int(Kind.CLONE_SHOP), int(Kind.ROLLED_SHOP)

DONE, ALREADY, SHORT, REFUSED = 0, 1, 2, 3
L_QUEUE, L_RESTRICT, L_POOL, L_RECEIPTS = 0, 1, 2, 3
_LIQUIDITY = {
    Liquidity.QUEUE: L_QUEUE,
    Liquidity.RESTRICT: L_RESTRICT,
    Liquidity.POOL: L_POOL,
    Liquidity.RECEIPTS: L_RECEIPTS,
}

# the operations of the one recursive function (numba caches self-recursion only)
OP_SETTLE, OP_MONEY, OP_REFUND, OP_UPLOAD, OP_FAST, OP_CREDIT_BATCH = 0, 1, 2, 3, 4, 5
OP_DEBIT_REQUEST, OP_CREDIT, OP_RETRY, OP_DECLARE = 6, 7, 8, 9

# scalars: S.sc[...]
(
    NOW,
    EVENT,
    CMAX_N,
    CMAX_BAL,
    TMAX_N,
    TMAX_RECV,
    LIQ,
    MAX_RCPT,
    WINDOW,
    TOP_UP_TO,
    NBANKS,
    NPEOPLE,
    POOL_AVAIL,
    POOL_OUT,
    ISSUED,
    REV_COUNT,
    SP,
    LOSSES,
    FAULT,
    NREFUNDS,
    FUND_TOP,
    ERR,
    ERR_EVENT,
    STAMP,
    NBLOCKED,
    OPEN_REFUNDS,
    PAY_MAX,  # the policy's per-payment maximum; -1: none
    SPENT_MAX,  # the card's offline total between syncs; -1: none
    DAY_N_MAX,  # the card's payments a day; -1: none
    DAY_SPENT_MAX,  # the card's total paid a day; -1: none
    OFFLINE_MAX,  # minutes the card may pay after its last sync's signed time; -1: none
) = range(31)
NSCALARS = 31

ERR_CONSERVATION, ERR_NEGATIVE, ERR_STACK, ERR_SEQ, ERR_SPACE = 1, 2, 3, 4, 5

# The state: a few 2-D arrays, one row per field (numba compiles a small tuple much faster).
State = namedtuple(  # type: ignore[misc]
    "State",
    "sc k bank_order P C M E32 E64 E8 BK AT att_map blocked_list c_log fund_flat rf_list stk flag "
    "tr msg nb stor psz",
)
# rows of P (people: int64), C (card slots: int64), M (merchants: int64), E32, E64 and E8
# (per event: int32, int64, int8), BK (intermediaries: int64), AT (broken cards: int64)
F_PB = 0
F_ONLINE = 1
F_SHADOW = 2
F_STATUS = 3
F_BLOCKED_AT = 4
F_RELEASED = 5
F_ISSUED_NO = 6
F_LAST_SEQ = 7
F_LAST_SESSION_NO = 8
F_OWED = 9
F_REV_VER = 10
F_SF_HEAD = 11
F_SF_OPEN_N = 12
F_SF_OPEN_SUM = 13
F_LOSS_DEV = 14
F_TWIN_SLOT = 15
F_SNAP_SLOT = 16
F_ATT_IDX = 17
F_G_STAMP = 18
F_G_SUM = 19
F_G_BAD = 20
F_C_DEV = 0
F_C_BAL = 1
F_C_SEQ = 2
F_C_INSTR = 3
F_C_SESS = 4
F_C_NLOG = 5
F_C_RECV = 6
F_C_DECLINED = 7
F_C_RV = 8
F_C_LP = 9  # the bytes of the last payment the card signed (0: none yet)
F_C_LIST = 10  # the bytes of the revocation list its last instruction carried (0: none)
F_C_SOPEN = 11  # 1 while the card holds an open session (one the intermediary refused stays)
# The card's clock (CardState.clock, synced_at, day; minutes from the start, -1: none) and the
# counters of its day (day_payments, day_spent).
F_C_CLOCK = 12
F_C_SYNCED = 13
F_C_DAY = 14
F_C_DAY_N = 15
F_C_DAY_SPENT = 16
F_MB = 0
F_MWALLET = 1
F_T_N = 2
F_T_RECV = 3
F_T_HEAD = 4
F_T_TAIL = 5
F_T_OPEN_N = 6
F_T_OPEN_AMT = 7
F_T_OPEN_HEAD = 8
F_T_DECL_N = 9
F_T_DECL_HEAD = 10
F_T_RV = 11
F_T_NEXT = 0
F_PAY_SEQ = 1
F_PAY_PAYER = 2
F_PAY_PAYEE = 3
F_SLOT_OF = 4
F_RC = 5
F_DBT_EV = 6
F_SF_EV = 7
F_SF_NEXT = 8
F_CREDITED = 9
F_SETTLED_AT = 10
F_QUEUED_AT = 11
F_FUND_LEN = 12
F_OUTCOME = 13
F_PAY_RECV = 0
F_PAMT = 1
F_FUND_START = 2
F_MOVED = 3
F_POOL_DRAWN = 4
F_POOL_AFTER = 5
F_PAY_TO_CARD = 0
F_SF_OPEN = 1
F_LOAN_STATE = 2
F_LOSS_REC = 3
F_DECLINED_REQ = 4
F_REFUND_STATE = 5
F_BANK_WALLETS = 0
F_HOLDINGS = 1
F_REL_CURSOR = 2
F_ATT_OFF = 0
F_ATT_LEN = 1


# -- money moves (every one goes through these, so that the checks see it) ------------------


@njit(cache=True)
def _err(S, kind):
    if S.sc[ERR] == 0:
        S.sc[ERR] = kind
        S.sc[ERR_EVENT] = S.sc[EVENT]


@njit(cache=True)
def _online(S, p, d):
    S.P[F_ONLINE, p] += d
    S.BK[F_BANK_WALLETS, S.P[F_PB, p]] += d
    if S.P[F_ONLINE, p] < 0:
        _err(S, ERR_NEGATIVE)


@njit(cache=True)
def _shadow(S, p, d):
    S.P[F_SHADOW, p] += d
    S.BK[F_BANK_WALLETS, S.P[F_PB, p]] += d
    if S.P[F_SHADOW, p] < 0:
        _err(S, ERR_NEGATIVE)


@njit(cache=True)
def _merchant(S, m, d):
    S.M[F_MWALLET, m] += d
    S.BK[F_BANK_WALLETS, S.M[F_MB, m]] += d
    if S.M[F_MWALLET, m] < 0:
        _err(S, ERR_NEGATIVE)


@njit(cache=True)
def _payee_bank(S, e):
    if S.E8[F_PAY_TO_CARD, e]:
        return S.P[F_PB, S.E32[F_PAY_PAYEE, e]]
    return S.M[F_MB, S.E32[F_PAY_PAYEE, e]]


@njit(cache=True)
def _payee_key(S, e):
    """A device as money_arrived knows it: a card by its person, a terminal after them."""
    if S.E8[F_PAY_TO_CARD, e]:
        return S.E32[F_PAY_PAYEE, e]
    return S.sc[NPEOPLE] + S.E32[F_PAY_PAYEE, e]


@njit(cache=True)
def _pay_payee_account(S, e, d):
    if S.E8[F_PAY_TO_CARD, e]:
        _shadow(S, S.E32[F_PAY_PAYEE, e], d)
    else:
        _merchant(S, S.E32[F_PAY_PAYEE, e], d)


@njit(cache=True)
def _fault(S, e):
    """A broken move for the test that the check catches it: the first credit at or after
    event ``S.sc[FAULT]`` is one minor unit too large."""
    if 0 <= S.sc[FAULT] <= S.sc[EVENT]:
        S.sc[FAULT] = -1
        _pay_payee_account(S, e, 1)


@njit(cache=True)
def _payee_holds(S, e):
    if S.E8[F_PAY_TO_CARD, e]:
        return S.P[F_SHADOW, S.E32[F_PAY_PAYEE, e]]
    return S.M[F_MWALLET, S.E32[F_PAY_PAYEE, e]]


@njit(cache=True)
def _cross(S, payer_bank, payee_bank, amount):
    """The notary moves holdings between two intermediaries."""
    if payer_bank != payee_bank:
        S.BK[F_HOLDINGS, payer_bank] -= amount
        S.BK[F_HOLDINGS, payee_bank] += amount


@njit(cache=True)
def _check(S):
    total = S.sc[POOL_AVAIL]
    for b in range(S.sc[NBANKS]):
        total += S.BK[F_BANK_WALLETS, b]
        if S.BK[F_BANK_WALLETS, b] != S.BK[F_HOLDINGS, b]:
            _err(S, ERR_CONSERVATION)
    if total != S.sc[ISSUED]:
        _err(S, ERR_CONSERVATION)


# -- the stack of event lists that nested settlements hand each other ------------------------


@njit(cache=True)
def _push(S, e):
    sp = S.sc[SP]
    if sp >= len(S.stk):
        _err(S, ERR_STACK)
        return
    S.stk[sp] = e
    S.flag[sp] = 0
    S.sc[SP] = sp + 1


# -- transaction ids: a payment's card and counter --------------------------------------------


@njit(cache=True)
def _lookup(S, p, seq):
    """The tx slot of (card, counter), or -1. Only a broken card's counters can be met twice;
    an honest card's payment is its own slot."""
    k = S.P[F_ATT_IDX, p]
    if k < 0 or seq >= S.AT[F_ATT_LEN, k]:
        return -1
    return S.att_map[S.AT[F_ATT_OFF, k] + seq]


@njit(cache=True)
def _register(S, e, p, seq):
    k = S.P[F_ATT_IDX, p]
    if k < 0:
        S.E32[F_SLOT_OF, e] = e
        return
    if seq >= S.AT[F_ATT_LEN, k]:
        _err(S, ERR_SEQ)
        S.E32[F_SLOT_OF, e] = e
        return
    j = S.AT[F_ATT_OFF, k] + seq
    if S.att_map[j] < 0:
        S.att_map[j] = e
    S.E32[F_SLOT_OF, e] = S.att_map[j]


# -- containment -------------------------------------------------------------------------------


@njit(cache=True)
def _block(S, p):
    if S.P[F_STATUS, p] == 0:
        S.P[F_STATUS, p] = 1
        S.P[F_BLOCKED_AT, p] = S.sc[NOW]
        S.blocked_list[S.sc[NBLOCKED]] = p
        S.sc[NBLOCKED] += 1
    if S.P[F_REV_VER, p] == 0:
        S.sc[REV_COUNT] += 1
        S.P[F_REV_VER, p] = S.sc[REV_COUNT]


@njit(cache=True)
def _record_loss(S, p, slot, amount):
    if not S.E8[F_LOSS_REC, slot]:
        S.E8[F_LOSS_REC, slot] = True
        S.sc[LOSSES] += amount
        S.P[F_LOSS_DEV, p] = True


@njit(cache=True)
def _close_shortfall(S, slot):
    if S.E8[F_SF_OPEN, slot]:
        S.E8[F_SF_OPEN, slot] = False
        p = S.E32[F_PAY_PAYER, S.E32[F_SF_EV, slot]]
        S.P[F_SF_OPEN_N, p] -= 1
        S.P[F_SF_OPEN_SUM, p] -= S.E64[F_PAMT, S.E32[F_SF_EV, slot]]


@njit(cache=True)
def _release_expired(S, bank):
    """Containment.release_expired: past the window, a blocked card's waiting payments are
    refused and its shadow wallet goes back online."""
    now = S.sc[NOW]
    # Cards are blocked in time order, so past the first one of this bank still inside its
    # window, none is due: each bank's cursor skips what it released or does not hold.
    k = S.BK[F_REL_CURSOR, bank]
    while k < S.sc[NBLOCKED]:
        q = S.blocked_list[k]
        if S.P[F_PB, q] != bank or S.P[F_RELEASED, q]:
            k += 1
            continue
        if now <= S.P[F_BLOCKED_AT, q] + S.sc[WINDOW]:
            break
        k += 1
        slot = S.P[F_SF_HEAD, q]
        while slot >= 0:
            _close_shortfall(S, slot)
            slot = S.E32[F_SF_NEXT, slot]
        left = S.P[F_SHADOW, q]
        if left:
            _shadow(S, q, -left)
            _online(S, q, left)
        S.P[F_RELEASED, q] = True
    S.BK[F_REL_CURSOR, bank] = k


# -- the pool ------------------------------------------------------------------------------------


@njit(cache=True)
def _draw(S, e, p, gap):
    """LiquidityDesk.draw: True if the gap is now in the payer's shadow wallet."""
    slot = S.E32[F_SLOT_OF, e]
    if S.E8[F_LOAN_STATE, slot] == 1:
        return True
    if gap > S.E64[F_PAY_RECV, e] - S.P[F_OWED, p]:
        return False
    if S.sc[POOL_AVAIL] < gap:
        S.E8[F_LOAN_STATE, slot] = 2
        return False
    S.sc[POOL_AVAIL] -= gap
    S.sc[POOL_OUT] += gap
    S.E8[F_LOAN_STATE, slot] = 1
    S.P[F_OWED, p] += gap
    S.BK[F_HOLDINGS, S.P[F_PB, p]] += gap
    _shadow(S, p, gap)
    S.E64[F_POOL_DRAWN, e] = gap
    return True


@njit(cache=True)
def _repay(S, p, budget):
    r = min(budget, S.P[F_OWED, p], S.P[F_SHADOW, p])
    if r > 0:
        _shadow(S, p, -r)
        S.P[F_OWED, p] -= r
        S.sc[POOL_AVAIL] += r
        S.sc[POOL_OUT] -= r
        S.BK[F_HOLDINGS, S.P[F_PB, p]] -= r


# -- the payer's intermediary: debit and notary --------------------------------------------------


@njit(cache=True)
def _record_shortfall(S, e):
    slot = S.E32[F_SLOT_OF, e]
    if S.E32[F_SF_EV, slot] >= 0:
        return
    p = S.E32[F_PAY_PAYER, e]
    S.E32[F_SF_EV, slot] = e
    S.E8[F_SF_OPEN, slot] = True
    S.P[F_SF_OPEN_N, p] += 1
    S.P[F_SF_OPEN_SUM, p] += S.E64[F_PAMT, e]
    S.E32[F_QUEUED_AT, e] = S.sc[NOW]
    S.E32[F_SF_NEXT, slot] = S.P[F_SF_HEAD, p]
    S.P[F_SF_HEAD, p] = slot


@njit(cache=True)
def _notarise(S, e):
    S.E32[F_SETTLED_AT, e] = S.sc[NOW]
    _cross(S, S.P[F_PB, S.E32[F_PAY_PAYER, e]], _payee_bank(S, e), S.E64[F_PAMT, e])


@njit(cache=True)
def _debit_notarise(S, e):
    """Intermediary._debit_and_notarise: (status << 1) | a receipt was given."""
    borrowed = False
    p = S.E32[F_PAY_PAYER, e]
    slot = S.E32[F_SLOT_OF, e]
    amount = S.E64[F_PAMT, e]
    while True:
        if (
            S.E32[F_PAY_SEQ, e] <= S.P[F_LAST_SEQ, p]
            and S.E32[F_DBT_EV, slot] < 0
            and S.E32[F_SF_EV, slot] < 0
        ):
            _block(S, p)  # made from a state the card had left: rolled back
            _record_loss(S, p, slot, amount)
            return REFUSED << 1
        late = S.P[F_STATUS, p] != 0 and S.sc[NOW] > S.P[F_BLOCKED_AT, p] + S.sc[WINDOW]
        if late and S.E32[F_DBT_EV, slot] < 0:
            return REFUSED << 1  # a blocked card's payment after the window
        existing = S.E32[F_DBT_EV, slot]
        waiting = S.E32[F_SF_EV, slot]
        conflict = False
        status = DONE
        gap = 0
        if existing < 0 and waiting >= 0 and waiting != e:
            conflict = True
        elif existing >= 0:
            if existing != e:
                conflict = True
            status = ALREADY
        elif S.P[F_SHADOW, p] >= amount:
            _shadow(S, p, -amount)
            S.E32[F_DBT_EV, slot] = e
        else:
            status = SHORT
            gap = amount - S.P[F_SHADOW, p]
        if conflict:
            _block(S, p)  # two payments under one counter: cloned
            _record_loss(S, p, slot, amount)
            return REFUSED << 1
        if status == SHORT:
            if not borrowed and S.sc[LIQ] == L_POOL and _draw(S, e, p, gap):
                borrowed = True
                continue
            _record_shortfall(S, e)
            return SHORT << 1
        if status == DONE:
            _notarise(S, e)
        _close_shortfall(S, slot)
        return (status << 1) | 1


@njit(cache=True)
def _settled_here(S, bank, f):
    slot = S.E32[F_SLOT_OF, f]
    d = S.E32[F_DBT_EV, slot]
    if d >= 0 and S.P[F_PB, S.E32[F_PAY_PAYER, d]] == bank:
        return True
    c = S.E32[F_CREDITED, slot]
    return c >= 0 and _payee_bank(S, c) == bank


@njit(cache=True)
def _classify(S, start, n):
    """BatchDesk._classify over a region: flag 0 plain (new), 2 already, 1 left for the
    one-by-one path. A payer's payments stay together."""
    S.sc[STAMP] += 1
    stamp = S.sc[STAMP]
    for k in range(start, start + n):
        e = S.stk[k]
        q = S.E32[F_PAY_PAYER, e]
        slot = S.E32[F_SLOT_OF, e]
        if S.P[F_G_STAMP, q] != stamp:
            S.P[F_G_STAMP, q] = stamp
            S.P[F_G_SUM, q] = 0
            S.P[F_G_BAD, q] = S.P[F_STATUS, q] != 0 or S.P[F_SF_OPEN_N, q] > 0
        if S.E32[F_SF_EV, slot] >= 0:
            S.P[F_G_BAD, q] = True
        d = S.E32[F_DBT_EV, slot]
        if d < 0:
            if S.E32[F_PAY_SEQ, e] <= S.P[F_LAST_SEQ, q]:
                S.P[F_G_BAD, q] = True
            S.P[F_G_SUM, q] += S.E64[F_PAMT, e]
        elif d != e:
            S.P[F_G_BAD, q] = True
        if S.P[F_ATT_IDX, q] >= 0:  # the same counter twice in one upload
            for j in range(start, k):
                f = S.stk[j]
                if S.E32[F_PAY_PAYER, f] == q and S.E32[F_PAY_SEQ, f] == S.E32[F_PAY_SEQ, e]:
                    S.P[F_G_BAD, q] = True
    for k in range(start, start + n):
        e = S.stk[k]
        q = S.E32[F_PAY_PAYER, e]
        if S.P[F_G_BAD, q] or S.P[F_G_SUM, q] > S.P[F_SHADOW, q]:
            S.flag[k] = 1
        elif S.E32[F_DBT_EV, S.E32[F_SLOT_OF, e]] >= 0:
            S.flag[k] = 2
        else:
            S.flag[k] = 0


# -- the one recursive function --------------------------------------------------------------


@njit(cache=True)
def _rec(S, op, x, y, z):  # one function: numba caches no mutual recursion
    K = S.k
    if op == OP_SETTLE:  # Intermediary.settle of payment x at bank y
        e, bank = x, y
        if S.E32[F_FUND_LEN, e] > 0:  # policy receipts: the funding first, in the card's order
            for j in range(S.E64[F_FUND_START, e], S.E64[F_FUND_START, e] + S.E32[F_FUND_LEN, e]):
                f = S.fund_flat[j]
                if not _settled_here(S, bank, f):
                    _rec(S, K[OP_SETTLE], np.int64(f), np.int64(bank), np.int64(z))
        r = _debit_notarise(S, e)
        if r & 1:
            _rec(S, K[OP_CREDIT], np.int64(e), np.int64(y), np.int64(z))
        return r >> 1

    if op == OP_CREDIT:  # Intermediary._credit of payment x at its payee's intermediary
        e = x
        slot = S.E32[F_SLOT_OF, e]
        if S.E32[F_CREDITED, slot] >= 0:
            return ALREADY
        S.E32[F_CREDITED, slot] = e
        _pay_payee_account(S, e, S.E64[F_PAMT, e])
        _fault(S, e)
        if S.E8[F_DECLINED_REQ, e]:
            _rec(S, K[OP_REFUND], np.int64(e), np.int64(y), np.int64(z))
        else:
            _rec(
                S, K[OP_MONEY], np.int64(_payee_key(S, e)), np.int64(S.E64[F_PAMT, e]), np.int64(z)
            )
        return DONE

    if op == OP_MONEY:  # Intermediary.money_arrived at device x (amount y)
        key = x
        for j in range(S.sc[NREFUNDS] if S.sc[OPEN_REFUNDS] else 0):  # owed, oldest first
            f = S.rf_list[j]
            if S.E8[F_REFUND_STATE, f] == 1 and _payee_key(S, f) == key:
                _rec(S, K[OP_REFUND], np.int64(f), np.int64(y), np.int64(z))
        if key < S.sc[NPEOPLE]:
            _repay(S, key, y)
            _rec(S, K[OP_RETRY], np.int64(key), np.int64(y), np.int64(z))
        return 0

    if op == OP_RETRY:  # Intermediary._retry_shortfalls of card x, in the payer's order
        p = x
        if S.P[F_SF_OPEN_N, p] == 0:
            return 0
        base = S.sc[SP]
        slot = S.P[F_SF_HEAD, p]
        while slot >= 0:
            if S.E8[F_SF_OPEN, slot]:
                _push(S, S.E32[F_SF_EV, slot])
            slot = S.E32[F_SF_NEXT, slot]
        n = S.sc[SP] - base
        seqs = np.empty(n, np.int64)
        for j in range(n):
            seqs[j] = S.E32[F_PAY_SEQ, S.stk[base + j]]
        order = np.argsort(seqs, kind="mergesort")
        ordered = np.empty(n, np.int64)
        for j in range(n):
            ordered[j] = S.stk[base + order[j]]
        bank = S.P[F_PB, p]
        for j in range(n):
            if _rec(S, K[OP_SETTLE], np.int64(ordered[j]), np.int64(bank), np.int64(z)) == SHORT:
                break
        S.sc[SP] = base
        return 0

    if op == OP_REFUND:  # Refusals.refund of payment x (its payee declined the request)
        e = x
        if S.E8[F_REFUND_STATE, e] == 2:
            return 1
        if S.E8[F_REFUND_STATE, e] == 0:
            S.E8[F_REFUND_STATE, e] = 1
            S.rf_list[S.sc[NREFUNDS]] = e
            S.sc[NREFUNDS] += 1
            S.sc[OPEN_REFUNDS] += 1
        amount = S.E64[F_PAMT, e]
        if _payee_holds(S, e) < amount:
            return 0  # owed: made when money reaches the payee
        _pay_payee_account(S, e, -amount)
        S.E8[F_REFUND_STATE, e] = 2
        S.sc[OPEN_REFUNDS] -= 1
        payer = S.E32[F_PAY_PAYER, e]
        _cross(S, _payee_bank(S, e), S.P[F_PB, payer], amount)
        _shadow(S, payer, amount)
        _rec(S, K[OP_MONEY], np.int64(payer), np.int64(amount), np.int64(z))
        return 1

    if op == OP_DECLARE:  # Refusals.declare for terminal x: its lapsed requests
        m = x
        e = S.M[F_T_DECL_HEAD, m]
        while e >= 0:
            S.E8[F_DECLINED_REQ, e] = True
            e = S.E32[F_T_NEXT, e]
        e = S.M[F_T_DECL_HEAD, m]
        while e >= 0:
            nxt = S.E32[F_T_NEXT, e]
            if S.E32[F_CREDITED, S.E32[F_SLOT_OF, e]] == e and S.E8[F_REFUND_STATE, e] == 0:
                _rec(S, K[OP_REFUND], np.int64(e), np.int64(y), np.int64(z))
            e = nxt
        return 0

    if op == OP_UPLOAD:  # BatchDesk.settle_upload at bank x of the region [y, y + z)
        bank, start, n = x, y, z
        eligible = n >= 2
        for k in range(start, start + n):
            if S.E32[F_FUND_LEN, S.stk[k]] > 0:
                eligible = False
        if not eligible:
            for k in range(start, start + n):
                _rec(S, K[OP_SETTLE], np.int64(S.stk[k]), np.int64(bank), np.int64(z))
            return 0
        local = S.sc[SP]
        for k in range(start, start + n):
            if S.P[F_PB, S.E32[F_PAY_PAYER, S.stk[k]]] == bank:
                _push(S, S.stk[k])
        nlocal = S.sc[SP] - local
        _rec(S, K[OP_FAST], np.int64(bank), np.int64(local), np.int64(nlocal))
        for r in range(S.sc[NBANKS]):
            other = S.bank_order[r]
            if other == bank:
                continue
            group = S.sc[SP]
            for k in range(start, start + n):
                if S.P[F_PB, S.E32[F_PAY_PAYER, S.stk[k]]] == other:
                    _push(S, S.stk[k])
            ngroup = S.sc[SP] - group
            if ngroup:
                _rec(S, K[OP_DEBIT_REQUEST], np.int64(other), np.int64(group), np.int64(ngroup))
            S.sc[SP] = group
        for k in range(local, local + nlocal):
            if S.flag[k] == 1:
                _rec(S, K[OP_SETTLE], np.int64(S.stk[k]), np.int64(bank), np.int64(z))
        S.sc[SP] = local
        return 0

    if op == OP_DEBIT_REQUEST:  # BatchDesk.debit_request at payer bank x for [y, y + z)
        bank, start, n = x, y, z
        _rec(S, K[OP_FAST], np.int64(bank), np.int64(start), np.int64(n))
        for k in range(start, start + n):
            if S.flag[k] == 1:
                e = S.stk[k]
                if _debit_notarise(S, e) & 1:
                    _rec(S, K[OP_CREDIT], np.int64(e), np.int64(y), np.int64(z))
        return 0

    if op == OP_FAST:  # BatchDesk._settle_fast at payer bank x for [y, y + z)
        bank, start, n = x, y, z
        _classify(S, start, n)
        for k in range(start, start + n):
            if S.flag[k] == 0:
                e = S.stk[k]
                _shadow(S, S.E32[F_PAY_PAYER, e], -S.E64[F_PAMT, e])
                S.E32[F_DBT_EV, S.E32[F_SLOT_OF, e]] = e
        for k in range(start, start + n):
            if S.flag[k] == 0:
                _notarise(S, S.stk[k])
        for r in range(S.sc[NBANKS]):
            payee_bank = S.bank_order[r]
            group = S.sc[SP]
            for k in range(start, start + n):
                if S.flag[k] == 0 and _payee_bank(S, S.stk[k]) == payee_bank:
                    _push(S, S.stk[k])
            ngroup = S.sc[SP] - group
            if ngroup:
                _rec(S, K[OP_CREDIT_BATCH], np.int64(payee_bank), np.int64(group), np.int64(ngroup))
            S.sc[SP] = group
        return 0

    if op == OP_CREDIT_BATCH:  # BatchDesk.credit at payee bank x for [y, y + z)
        start, n = y, z
        for k in range(start, start + n):
            e = S.stk[k]
            if S.E32[F_CREDITED, S.E32[F_SLOT_OF, e]] >= 0:
                S.flag[k] = 2
            elif S.E8[F_DECLINED_REQ, e]:
                S.flag[k] = 1
            else:
                S.flag[k] = 0
        npeople = S.sc[NPEOPLE]
        keys = np.empty(n, np.int64)
        count = 0
        for k in range(start, start + n):
            if S.flag[k] == 0:
                e = S.stk[k]
                S.E32[F_CREDITED, S.E32[F_SLOT_OF, e]] = e
                _pay_payee_account(S, e, S.E64[F_PAMT, e])
                _fault(S, e)
                keys[count] = _payee_key(S, e)
                count += 1
        for k in range(start, start + n):
            if S.flag[k] == 1:
                _rec(S, K[OP_CREDIT], np.int64(S.stk[k]), np.int64(y), np.int64(z))
        # money_arrived once per payee device, in the order of the devices' ids
        sums = np.zeros(count, np.int64)
        count = 0
        for k in range(start, start + n):
            if S.flag[k] == 0:
                sums[count] = S.E64[F_PAMT, S.stk[k]]
                count += 1
        order = np.argsort(keys[:count], kind="mergesort")
        j = 0
        while j < count:
            key = keys[order[j]]
            total = 0
            while j < count and keys[order[j]] == key:
                total += sums[order[j]]
                j += 1
            _rec(S, K[OP_MONEY], np.int64(key), np.int64(total), np.int64(npeople))
        return 0
    return 0


# -- traffic and storage (the sizes calibrated on real devices at the start of a run) ---------

# indices into S.tr, composed by :func:`_sizes`
(
    TR_PAY_SHOP,
    TR_PAY_P2P,
    TR_SHOP_OK,
    TR_SHOP_DUP,
    TR_SHOP_CARD,
    TR_LAST_HEAD,
    TR_LAST_NONE,
    TR_SHOP_TERM,
    TR_ASK_REFUSED,
    TR_P2P_PAYER,
    TR_P2P_OK,
    TR_P2P_RECV,
    TR_S_COMMON,
    TR_S_BEGIN_SYNC,
    TR_S_BEGIN_TOPUP,
    TR_S_CARRY_FIRST,
    TR_S_CARRY,
    TR_S_ENTRY,
    TR_S_DECL,
    TR_S_CONFIRM,
    TR_PIN,
    TR_T_SYNC,
    TR_T_SEAL,
    TR_T_UPREC,
    TR_B_P,
    TR_B_I,
    TR_B_LAST,
    TR_B_ENTRY,
    TR_B_DECL,
    TR_B_SESS,
    TR_LIST_BASE,
    TR_LIST_DEVICE,
    TR_B_REVOKED,
    TR_B_OPEN,
    TR_T_DECL,
) = range(35)
NTR = 35


@njit(cache=True)
def _carry(S, messages, carried):
    """Messages and bytes of the event being played. A PIN entry is two messages (GET
    CHALLENGE, then VERIFY with the PIN enciphered to the card), three in a shop, where the
    terminal module's PIN pad enciphers it (offpay.wire.enciphered_pin)."""
    i = S.sc[EVENT]
    S.msg[i] += messages
    S.nb[i] += carried


@njit(cache=True)
def _psz(S, e):
    """A payment's bytes: its kind's, and under policy receipts the receipts it carries."""
    if len(S.psz) > 1:
        return np.int64(S.psz[e])
    return S.tr[TR_PAY_P2P] if S.E8[F_PAY_TO_CARD, e] else S.tr[TR_PAY_SHOP]


@njit(cache=True)
def _list_bytes(S, held, listed):
    """The revocation list of ``listed`` devices an instruction carries to a device holding
    the list of ``held``: nothing if that is as new."""
    if held >= listed:
        return np.int64(0)
    return S.tr[TR_LIST_BASE] + listed * S.tr[TR_LIST_DEVICE]


@njit(cache=True)
def _log_bytes(S, cs, per_entry):
    total = np.int64(0)
    for j in range(S.C[F_C_NLOG, cs]):
        total += _psz(S, S.c_log[cs, j]) + per_entry
    return total


@njit(cache=True)
def _stored(S, cs, transient):
    """A person's card wrote its state: its sealed size, the peak kept (twins are not people)."""
    if cs >= S.sc[NPEOPLE]:
        return
    size = S.tr[TR_B_P] + _log_bytes(S, cs, S.tr[TR_B_ENTRY]) + transient
    size += S.C[F_C_DECLINED, cs] * S.tr[TR_B_DECL]
    if S.C[F_C_INSTR, cs] > 0:
        size += S.tr[TR_B_I]
    if S.C[F_C_LP, cs] > 0:
        size += S.C[F_C_LP, cs] + S.tr[TR_B_LAST]
    size += S.C[F_C_LIST, cs] + S.C[F_C_RV, cs] * S.tr[TR_B_REVOKED]
    size += S.C[F_C_SOPEN, cs] * S.tr[TR_B_SESS]
    if size > S.stor[cs]:
        S.stor[cs] = size


# -- devices: cards -----------------------------------------------------------------------


@njit(cache=True)
def _copy_card(S, src, dst):
    S.C[F_C_DEV, dst] = S.C[F_C_DEV, src]
    S.C[F_C_BAL, dst] = S.C[F_C_BAL, src]
    S.C[F_C_SEQ, dst] = S.C[F_C_SEQ, src]
    S.C[F_C_INSTR, dst] = S.C[F_C_INSTR, src]
    S.C[F_C_SESS, dst] = S.C[F_C_SESS, src]
    S.C[F_C_NLOG, dst] = S.C[F_C_NLOG, src]
    S.c_log[dst, :] = S.c_log[src, :]
    S.C[F_C_RECV, dst] = S.C[F_C_RECV, src]
    S.C[F_C_DECLINED, dst] = S.C[F_C_DECLINED, src]
    S.C[F_C_RV, dst] = S.C[F_C_RV, src]
    S.C[F_C_LP, dst] = S.C[F_C_LP, src]
    S.C[F_C_LIST, dst] = S.C[F_C_LIST, src]
    S.C[F_C_SOPEN, dst] = S.C[F_C_SOPEN, src]
    S.C[F_C_CLOCK, dst] = S.C[F_C_CLOCK, src]
    S.C[F_C_SYNCED, dst] = S.C[F_C_SYNCED, src]
    S.C[F_C_DAY, dst] = S.C[F_C_DAY, src]
    S.C[F_C_DAY_N, dst] = S.C[F_C_DAY_N, src]
    S.C[F_C_DAY_SPENT, dst] = S.C[F_C_DAY_SPENT, src]


@njit(cache=True)
def _knows_revoked(device_version, p_version):
    return p_version > 0 and p_version <= device_version


@njit(cache=True)
def _today(S, cs, payee_time):
    """offpay.device.card.today: the card's clock after the payee's signed time (-1: none),
    never moved back, and its day with that day's payments and total."""
    clock = S.C[F_C_CLOCK, cs]
    if payee_time >= 0 and (clock < 0 or payee_time > clock):
        clock = payee_time
    day = clock // MINUTES_A_DAY if clock >= 0 else np.int64(-1)
    if day >= 0 and (S.C[F_C_DAY, cs] < 0 or day > S.C[F_C_DAY, cs]):
        return clock, day, np.int64(0), np.int64(0)
    return clock, S.C[F_C_DAY, cs], S.C[F_C_DAY_N, cs], S.C[F_C_DAY_SPENT, cs]


@njit(cache=True)
def _pay_check(S, cs, amount, payee_revoked, payee_time):
    """Card._pay's refusals, in its order (check_payment_limits last)."""
    if payee_revoked:
        return C_CRYPTO_REVOKED
    p = S.C[F_C_DEV, cs]
    if _knows_revoked(S.C[F_C_RV, cs], S.P[F_REV_VER, p]):
        return C_DEV_REVOKED
    if S.C[F_C_NLOG, cs] + 1 > S.sc[CMAX_N]:
        return C_CARD_N
    if amount > S.C[F_C_BAL, cs]:
        return C_FUNDS
    if S.sc[LIQ] == L_RESTRICT and amount > S.C[F_C_BAL, cs] - S.C[F_C_RECV, cs]:
        return C_NOT_SPENDABLE
    if S.sc[PAY_MAX] >= 0 and amount > S.sc[PAY_MAX]:
        return C_PAY_MAX
    clock, _, day_n, day_spent = _today(S, cs, payee_time)
    if S.sc[OFFLINE_MAX] >= 0:
        synced = S.C[F_C_SYNCED, cs]
        if synced < 0 or clock < 0 or clock - synced > S.sc[OFFLINE_MAX]:
            return C_HOURS
    if S.sc[SPENT_MAX] >= 0 and _spent(S, cs) + amount > S.sc[SPENT_MAX]:
        return C_SPENT
    if S.sc[DAY_N_MAX] >= 0 and day_n + 1 > S.sc[DAY_N_MAX]:
        return C_DAY_N
    if S.sc[DAY_SPENT_MAX] >= 0 and day_spent + amount > S.sc[DAY_SPENT_MAX]:
        return C_DAY_SPENT
    return C_OK


@njit(cache=True)
def _spent(S, cs):
    """What the card paid in the outgoing entries of its log: its offline total since the
    last sync (CardState.spent_offline)."""
    p = S.C[F_C_DEV, cs]
    total = 0
    for j in range(S.C[F_C_NLOG, cs]):
        f = S.c_log[cs, j]
        if S.E32[F_PAY_PAYER, f] == p:
            total += S.E64[F_PAMT, f]
    return total


@njit(cache=True)
def _pay(S, e, cs, amount, to_card, payee, payee_time):
    """Card._pay once its checks passed: counter, funding receipts, log, balance, clock and
    the day's counters."""
    p = S.C[F_C_DEV, cs]
    clock, day, day_n, day_spent = _today(S, cs, payee_time)
    S.C[F_C_CLOCK, cs] = clock
    S.C[F_C_DAY, cs] = day
    S.C[F_C_DAY_N, cs] = day_n + 1
    S.C[F_C_DAY_SPENT, cs] = day_spent + amount
    seq = S.C[F_C_SEQ, cs] + 1
    S.C[F_C_SEQ, cs] = seq
    S.E32[F_PAY_SEQ, e] = seq
    S.E32[F_PAY_PAYER, e] = p
    S.E8[F_PAY_TO_CARD, e] = to_card
    S.E32[F_PAY_PAYEE, e] = payee
    S.E64[F_PAY_RECV, e] = S.C[F_C_RECV, cs]
    S.E64[F_PAMT, e] = amount
    S.E64[F_MOVED, e] = amount
    _register(S, e, p, seq)
    S.E32[F_RC, e] = 1
    if S.sc[LIQ] == L_RECEIPTS:
        count = 0
        first = S.C[F_C_NLOG, cs]
        for j in range(S.C[F_C_NLOG, cs] - 1, -1, -1):
            f = S.c_log[cs, j]
            if S.E32[F_PAY_PAYER, f] == p:
                continue  # an outgoing entry
            if count + S.E32[F_RC, f] > S.sc[MAX_RCPT]:
                break
            count += S.E32[F_RC, f]
            first = j
        top = S.sc[FUND_TOP]
        S.E64[F_FUND_START, e] = top
        n = 0
        for j in range(first, S.C[F_C_NLOG, cs]):
            f = S.c_log[cs, j]
            if S.E32[F_PAY_PAYER, f] != p:
                if top + n >= len(S.fund_flat):
                    _err(S, ERR_SPACE)
                    break
                S.fund_flat[top + n] = f
                n += 1
        S.E32[F_FUND_LEN, e] = n
        S.sc[FUND_TOP] = top + n
        S.E32[F_RC, e] = 1 + count
        size = S.tr[TR_PAY_P2P] if to_card else S.tr[TR_PAY_SHOP]
        for j in range(top, top + n):
            size += S.psz[S.fund_flat[j]]
        S.psz[e] = size
    S.C[F_C_BAL, cs] -= amount
    S.c_log[cs, S.C[F_C_NLOG, cs]] = e
    S.C[F_C_NLOG, cs] += 1
    S.C[F_C_LP, cs] = _psz(S, e)
    _stored(S, cs, 0)


@njit(cache=True)
def _shop(S, e, cs, m, amount):
    """PosApp.charge: the terminal module's request, the card's payment, the module's accept;
    the messages and bytes that crossed."""
    code = _shop_rules(S, e, cs, m, amount)
    if code == C_OK:
        _carry(S, 7, S.tr[TR_SHOP_OK] + 3 * _psz(S, e))
    elif code == C_DUPLICATE:
        _carry(S, 7, S.tr[TR_SHOP_DUP] + 2 * _psz(S, e))
    return code


@njit(cache=True)
def _shop_rules(S, e, cs, m, amount):
    """The module's checks, then the card's (``_shop``: what crossed)."""
    p = S.C[F_C_DEV, cs]
    code = C_OK
    if _knows_revoked(S.M[F_T_RV, m], S.P[F_REV_VER, p]):
        code = C_CRYPTO_REVOKED
    elif (
        S.M[F_T_OPEN_N, m] >= T_OPEN_MAX or S.M[F_T_OPEN_N, m] + S.M[F_T_DECL_N, m] >= DECLINED_MAX
    ):
        code = C_BUSY
    elif S.sc[PAY_MAX] >= 0 and amount > S.sc[PAY_MAX]:
        code = C_PAY_MAX
    elif S.M[F_T_N, m] + S.M[F_T_OPEN_N, m] + 1 > S.sc[TMAX_N]:
        code = C_TERM_N
    elif S.M[F_T_RECV, m] + S.M[F_T_OPEN_AMT, m] + amount > S.sc[TMAX_RECV]:
        code = C_TERM_RECV
    if code != C_OK:
        _carry(S, 2, S.tr[TR_SHOP_TERM])  # the module refuses to make the request
        return code
    # the module signs its host's clock (the simulated time; TerminalModule.request_payment)
    code = _pay_check(S, cs, amount, False, S.sc[NOW])
    if code != C_OK:
        S.M[F_T_DECL_N, m] += 1  # the app declines the request the card refused
        lp = S.C[F_C_LP, cs]  # the app asks the card for its last payment
        last = lp + S.tr[TR_LAST_HEAD] if lp > 0 else S.tr[TR_LAST_NONE]
        _carry(S, 8, S.tr[TR_SHOP_CARD] + last)
        return code
    _pay(S, e, cs, amount, False, m, S.sc[NOW])
    if S.P[F_ATT_IDX, p] >= 0:  # a payment under a counter this terminal holds already
        f = S.M[F_T_HEAD, m]
        while f >= 0:
            if S.E32[F_PAY_PAYER, f] == p and S.E32[F_PAY_SEQ, f] == S.E32[F_PAY_SEQ, e]:
                S.M[F_T_OPEN_N, m] += 1  # the request stays open until the terminal's sync
                S.M[F_T_OPEN_AMT, m] += amount
                S.E32[F_T_NEXT, e] = S.M[F_T_OPEN_HEAD, m]
                S.M[F_T_OPEN_HEAD, m] = e
                return C_DUPLICATE
            f = S.E32[F_T_NEXT, f]
    S.E32[F_T_NEXT, e] = -1
    if S.M[F_T_TAIL, m] >= 0:
        S.E32[F_T_NEXT, S.M[F_T_TAIL, m]] = e
    else:
        S.M[F_T_HEAD, m] = e
    S.M[F_T_TAIL, m] = e
    S.M[F_T_N, m] += 1
    S.M[F_T_RECV, m] += amount
    return C_OK


@njit(cache=True)
def _p2p(S, e, a, b, amount):
    """The payee's card asks, the payer's card pays, the payee's card receives; the messages
    and bytes that crossed."""
    code = C_OK
    if _knows_revoked(S.C[F_C_RV, b], S.P[F_REV_VER, a]):
        code = C_CRYPTO_REVOKED
    elif S.sc[PAY_MAX] >= 0 and amount > S.sc[PAY_MAX]:
        code = C_PAY_MAX  # the payee's card refuses to ask
    elif S.C[F_C_DECLINED, b] >= DECLINED_MAX:
        code = C_BUSY
    elif S.C[F_C_BAL, b] + amount > S.sc[CMAX_BAL]:
        code = C_CARD_BAL
    elif S.C[F_C_NLOG, b] + 1 > S.sc[CMAX_N]:
        code = C_CARD_N
    if code != C_OK:
        _carry(S, 2, S.tr[TR_ASK_REFUSED])
        return code
    _stored(S, b, S.tr[TR_B_OPEN])  # the payee's card holds the request open
    # the payee's card signs its own clock in its request (Card._request_payment)
    payee_time = S.C[F_C_CLOCK, b]
    code = _pay_check(S, a, amount, _knows_revoked(S.C[F_C_RV, a], S.P[F_REV_VER, b]), payee_time)
    if code != C_OK:
        S.C[F_C_DECLINED, b] += 1  # the payee's phone declines the request
        _stored(S, b, 0)
        _carry(S, 6, S.tr[TR_P2P_PAYER])
        return code
    _pay(S, e, a, amount, True, b, payee_time)
    if _knows_revoked(S.C[F_C_RV, b], S.P[F_REV_VER, b]):
        # Card._receive checks the request's signer too: a card that knows itself revoked
        # refuses the payment answering its own request (paid by now); the phone declines it
        S.C[F_C_DECLINED, b] += 1
        _stored(S, b, 0)
        _carry(S, 9, S.tr[TR_P2P_RECV] + 2 * _psz(S, e))
        return C_CRYPTO_REVOKED
    S.C[F_C_BAL, b] += amount
    S.C[F_C_SEQ, b] += 1
    S.c_log[b, S.C[F_C_NLOG, b]] = e
    S.C[F_C_NLOG, b] += 1
    S.C[F_C_RECV, b] += amount
    _stored(S, b, 0)
    _carry(S, 8, S.tr[TR_P2P_OK] + 2 * _psz(S, e))
    return C_OK


@njit(cache=True)
def _card_session(S, p, top_up):
    """PhoneApp.online (top_up 0: a sync) and the messages and bytes that crossed: the card's
    session carries its log to the intermediary; a session the intermediary refuses ends there,
    a confirmation it refuses after the card applied the instruction ends before the status."""
    cs = p
    first = S.C[F_C_INSTR, cs] == 0
    S.C[F_C_SOPEN, cs] = 1
    _stored(S, cs, 0)  # the card holds its log and the open session
    sent = S.tr[TR_PIN] + (S.tr[TR_S_BEGIN_TOPUP] if top_up > 0 else S.tr[TR_S_BEGIN_SYNC])
    sent += S.tr[TR_S_CARRY_FIRST] if first else S.tr[TR_S_CARRY]
    sent += 2 * (_log_bytes(S, cs, S.tr[TR_S_ENTRY]) + S.C[F_C_DECLINED, cs] * S.tr[TR_S_DECL])
    sent += 2 * S.C[F_C_LIST, cs]  # the session shows the last instruction, with its list
    instructions, version = S.C[F_C_INSTR, cs], S.C[F_C_RV, cs]
    code = _card_session_rules(S, p, top_up)
    if S.C[F_C_INSTR, cs] != instructions:  # the instruction came, with the list if newer
        S.C[F_C_SOPEN, cs] = 0
        # the list as the instruction was made: a block at the confirmation comes after it
        listed = _list_bytes(S, version, S.C[F_C_RV, cs])
        S.C[F_C_LIST, cs] = listed
        sent += 2 * listed  # the intermediary's answer and the card's apply carry it
        if code == C_OK:
            _carry(S, 7, sent + S.tr[TR_S_COMMON])
        else:
            _carry(S, 6, sent + S.tr[TR_S_CONFIRM])
    else:
        _carry(S, 4, sent)
    _stored(S, cs, 0)
    return code


@njit(cache=True)
def _card_session_rules(S, p, top_up):
    """The card's session, Intermediary.sync_card, the card's apply and the confirmation."""
    K = S.k
    cs = p
    S.C[F_C_SESS, cs] += 1
    session_no = S.C[F_C_SESS, cs]
    bank = S.P[F_PB, p]
    _release_expired(S, bank)
    if S.P[F_STATUS, p] != 0:
        return C_CRYPTO_REVOKED  # its intermediary revoked it
    seq = S.C[F_C_SEQ, cs]
    if (
        seq < S.P[F_LAST_SEQ, p]
        or session_no <= S.P[F_LAST_SESSION_NO, p]
        or S.P[F_ISSUED_NO, p] > S.C[F_C_INSTR, cs]
    ):
        for j in range(S.C[F_C_NLOG, cs]):
            e = S.c_log[cs, j]
            if S.E32[F_PAY_PAYER, e] != p or S.E32[F_PAY_SEQ, e] > S.P[F_LAST_SEQ, p]:
                continue
            slot = S.E32[F_SLOT_OF, e]
            if S.E32[F_DBT_EV, slot] != e and S.E32[F_SF_EV, slot] != e:
                _block(S, p)  # spent again from a state it had left
                _record_loss(S, p, slot, S.E64[F_PAMT, e])
                return C_ROLLED
        return C_STALE
    if S.C[F_C_INSTR, cs] != S.P[F_ISSUED_NO, p]:
        _block(S, p)
        return C_DRIFT
    number = S.P[F_ISSUED_NO, p] + 1
    if top_up > 0:
        if top_up > S.P[F_ONLINE, p]:
            return C_FUNDS
        if S.C[F_C_BAL, cs] + top_up > S.sc[CMAX_BAL]:
            return C_CARD_BAL
    base = S.sc[SP]
    for j in range(S.C[F_C_NLOG, cs]):
        _push(S, S.c_log[cs, j])
    _rec(S, K[OP_UPLOAD], np.int64(bank), np.int64(base), np.int64(S.sc[SP] - base))
    S.sc[SP] = base
    if top_up > 0:
        _online(S, p, -top_up)
        _shadow(S, p, top_up)
    _rec(S, K[OP_RETRY], np.int64(p), np.int64(bank), np.int64(bank))
    balance = max(0, S.P[F_SHADOW, p] - S.P[F_SF_OPEN_SUM, p])
    if balance > S.sc[CMAX_BAL]:
        excess = balance - S.sc[CMAX_BAL]
        _shadow(S, p, -excess)
        _online(S, p, excess)
        balance -= excess
    S.P[F_ISSUED_NO, p] = number
    S.P[F_LAST_SEQ, p] = seq
    S.P[F_LAST_SESSION_NO, p] = session_no
    # the card applies the instruction
    S.C[F_C_BAL, cs] = balance
    S.C[F_C_SEQ, cs] = seq + 1
    S.C[F_C_INSTR, cs] = number
    S.C[F_C_NLOG, cs] = 0
    S.C[F_C_RECV, cs] = 0
    S.C[F_C_DECLINED, cs] = 0
    # the intermediary's signed time (engine_time) sets the clock; a day it contradicts keeps
    # the counters of the later day
    S.C[F_C_CLOCK, cs] = S.sc[NOW]
    S.C[F_C_SYNCED, cs] = S.sc[NOW]
    today = S.sc[NOW] // MINUTES_A_DAY
    if S.C[F_C_DAY, cs] < 0 or today < S.C[F_C_DAY, cs]:
        S.C[F_C_DAY, cs] = today
    if S.C[F_C_RV, cs] < S.sc[REV_COUNT]:
        S.C[F_C_RV, cs] = S.sc[REV_COUNT]
    if S.P[F_STATUS, p] != 0:
        return C_CRYPTO_REVOKED  # blocked during its own sync: its confirmation is refused
    # its confirmation: a payment under the counter it just used was made by a copy
    slot = _lookup(S, p, seq + 1)
    if slot >= 0:
        amount = -1
        if S.E32[F_DBT_EV, slot] >= 0:
            amount = S.E64[F_PAMT, S.E32[F_DBT_EV, slot]]
        elif S.E32[F_SF_EV, slot] >= 0 and S.E8[F_SF_OPEN, slot]:
            amount = S.E64[F_PAMT, S.E32[F_SF_EV, slot]]
        if amount >= 0:
            _block(S, p)
            _close_shortfall(S, slot)
            _record_loss(S, p, slot, amount)
    if S.P[F_LAST_SEQ, p] < seq + 1:
        S.P[F_LAST_SEQ, p] = seq + 1
    return C_OK


@njit(cache=True)
def _terminal_session(S, m):
    """PosApp.sync and Intermediary.sync_terminal."""
    K = S.k
    bank = S.M[F_MB, m]
    # requests still open lapse into declines, declared with the upload
    e = S.M[F_T_OPEN_HEAD, m]
    while e >= 0:
        nxt = S.E32[F_T_NEXT, e]
        S.E32[F_T_NEXT, e] = S.M[F_T_DECL_HEAD, m]
        S.M[F_T_DECL_HEAD, m] = e
        e = nxt
    S.M[F_T_DECL_N, m] += S.M[F_T_OPEN_N, m]
    S.M[F_T_OPEN_N, m] = 0
    S.M[F_T_OPEN_AMT, m] = 0
    S.M[F_T_OPEN_HEAD, m] = -1
    if S.M[F_T_DECL_HEAD, m] >= 0:
        _rec(S, K[OP_DECLARE], np.int64(m), np.int64(bank), np.int64(bank))
    base = S.sc[SP]
    e = S.M[F_T_HEAD, m]
    carried = S.tr[TR_T_SYNC] + 2 * S.M[F_T_DECL_N, m] * S.tr[TR_T_DECL]  # in the upload
    while e >= 0:
        _push(S, e)
        carried += 3 * _psz(S, e) + S.tr[TR_T_SEAL] + 2 * S.tr[TR_T_UPREC]
        e = S.E32[F_T_NEXT, e]
    _rec(S, K[OP_UPLOAD], np.int64(bank), np.int64(base), np.int64(S.sc[SP] - base))
    S.sc[SP] = base
    # the list in the instruction, to the app and module
    carried += 2 * _list_bytes(S, S.M[F_T_RV, m], S.sc[REV_COUNT])
    _carry(S, 3, carried)  # the records to the module, its upload to the intermediary
    if S.M[F_T_RV, m] < S.sc[REV_COUNT]:
        S.M[F_T_RV, m] = S.sc[REV_COUNT]
    S.M[F_T_HEAD, m] = -1
    S.M[F_T_TAIL, m] = -1
    S.M[F_T_N, m] = 0
    S.M[F_T_RECV, m] = 0
    S.M[F_T_DECL_N, m] = 0
    S.M[F_T_DECL_HEAD, m] = -1
    return C_OK


@njit(cache=True)
def _event(S, i, kind, a, b, amount):
    a, b, amount = np.int64(a), np.int64(b), np.int64(amount)
    if kind == K_SHOP:
        return _shop(S, i, a, b, amount)
    if kind == K_P2P:
        return _p2p(S, i, a, b, amount)
    if kind == K_ONLINE:
        code = _card_session(S, a, 0)
        if code != C_OK:
            return code
        top_up = min(S.sc[TOP_UP_TO] - S.C[F_C_BAL, a], S.P[F_ONLINE, a])
        if top_up > 0:
            code = _card_session(S, a, top_up)
            if code == C_OK:
                S.E64[F_MOVED, i] = top_up
        return code
    if kind == K_SHOP_ONLINE:
        return _terminal_session(S, a)
    if kind == K_CLONE:
        _copy_card(S, a, S.P[F_TWIN_SLOT, a])
        return C_OK
    if kind == K_SNAPSHOT:
        _copy_card(S, a, S.P[F_SNAP_SLOT, a])
        return C_OK
    if kind == K_ROLLBACK:
        _copy_card(S, S.P[F_SNAP_SLOT, a], a)
        return C_OK
    if kind in (K_CLONE_SHOP, K_ROLLED_SHOP):
        cs = S.P[F_TWIN_SLOT, a] if kind == K_CLONE_SHOP else a
        if amount == 0:
            amount = S.C[F_C_BAL, cs]
            if amount <= 0:
                return C_FUNDS
        return _shop(S, i, cs, b, amount)
    return C_OK


@njit(cache=True)
def _run(S, t, kind, a, b, amount, cut, i0, i1):
    """Events [i0, i1); 0, or the first error's kind (S.sc[ERR_EVENT] names the event)."""
    for i in range(i0, i1):
        S.sc[NOW] = t[i]
        S.sc[EVENT] = i
        if cut[i]:
            S.E32[F_OUTCOME, i] = C_UNREACHABLE
        else:
            S.E32[F_OUTCOME, i] = _event(S, i, kind[i], a[i], b[i], amount[i])
        S.E64[F_POOL_AFTER, i] = S.sc[POOL_OUT]
        _check(S)
        if S.sc[ERR] != 0:
            return S.sc[ERR]
    return 0


# -- Python: the state, the run, the results ------------------------------------------------------


def _seq_bounds(world: World, events: Events, attacked: np.ndarray) -> np.ndarray:
    """An upper bound on the counter of each broken card: every event can move it by at most
    two (a sync and a top-up)."""
    involved = np.zeros(world.people, np.int64)
    np.add.at(involved, events.a[events.kind != K_SHOP_ONLINE], 1)
    p2p = events.kind == K_P2P
    np.add.at(involved, events.b[p2p], 1)
    return 2 * involved[attacked] + 8


def _state(scenario: Scenario, world: World, events: Events, fault: int) -> State:
    P, M, E, B = world.people, world.merchants, len(events), len(world.banks)
    policy = scenario.policy
    liquidity = _LIQUIDITY[scenario.liquidity.policy]
    cloned, rolled = world.cloned.astype(np.int64), world.rolled_back.astype(np.int64)
    C, R = len(cloned), len(rolled)
    attacked = np.concatenate([cloned, rolled])
    slots = P + C + R
    cap = max(1, policy.card_max_offline_transactions)

    sc = np.zeros(NSCALARS, np.int64)
    sc[CMAX_N] = policy.card_max_offline_transactions
    sc[CMAX_BAL] = policy.card_max_balance.minor
    sc[TMAX_N] = policy.terminal_max_offline_payments
    sc[TMAX_RECV] = policy.terminal_max_received.minor
    sc[LIQ] = liquidity
    sc[MAX_RCPT] = policy.max_receipts
    sc[WINDOW] = policy.blocked_window_hours * 60
    sc[TOP_UP_TO] = scenario.behaviour.top_up_to
    sc[NBANKS] = B
    sc[NPEOPLE] = P
    sc[POOL_AVAIL] = scenario.liquidity.pool
    sc[ISSUED] = P * scenario.behaviour.online_wallet + scenario.liquidity.pool
    sc[FAULT] = fault
    sc[PAY_MAX] = -1 if policy.payment_max is None else policy.payment_max.minor
    sc[SPENT_MAX] = (
        -1 if policy.card_max_offline_spent is None else policy.card_max_offline_spent.minor
    )
    daily_n, daily, hours = (
        policy.card_max_daily_payments,
        policy.card_max_daily_spent,
        policy.max_offline_hours,
    )
    sc[DAY_N_MAX] = -1 if daily_n is None else daily_n
    sc[DAY_SPENT_MAX] = -1 if daily is None else daily.minor
    sc[OFFLINE_MAX] = -1 if hours is None else hours * 60

    people = np.zeros((F_G_BAD + 1, P), np.int64)
    people[F_PB] = world.person_bank
    people[F_ONLINE] = scenario.behaviour.online_wallet
    people[F_SF_HEAD] = -1
    people[F_TWIN_SLOT] = -1
    people[F_TWIN_SLOT, cloned] = P + np.arange(C)
    people[F_SNAP_SLOT] = -1
    people[F_SNAP_SLOT, rolled] = P + C + np.arange(R)
    people[F_ATT_IDX] = -1
    people[F_ATT_IDX, attacked] = np.arange(len(attacked))

    cards = np.zeros((F_C_DAY_SPENT + 1, slots), np.int64)
    cards[F_C_DEV] = np.concatenate([np.arange(P), cloned, rolled])
    for row in (F_C_CLOCK, F_C_SYNCED, F_C_DAY):
        cards[row] = -1

    shops = np.zeros((F_T_RV + 1, M), np.int64)
    shops[F_MB] = world.merchant_bank
    for row in (F_T_HEAD, F_T_TAIL, F_T_OPEN_HEAD, F_T_DECL_HEAD):
        shops[row] = -1

    e32 = np.zeros((F_OUTCOME + 1, E), np.int32)
    for row in (F_T_NEXT, F_PAY_PAYER, F_PAY_PAYEE, F_SLOT_OF, F_DBT_EV, F_SF_EV, F_SF_NEXT):
        e32[row] = -1
    for row in (F_CREDITED, F_SETTLED_AT, F_QUEUED_AT):
        e32[row] = -1
    e64 = np.zeros((F_POOL_AFTER + 1, E), np.int64)
    e8 = np.zeros((F_REFUND_STATE + 1, E), np.int8)

    wallets = np.bincount(people[F_PB], weights=people[F_ONLINE], minlength=B).astype(np.int64)
    names = list(world.banks)
    bank_order = np.array(sorted(range(B), key=lambda k: names[k]), np.int64)

    att_len = _seq_bounds(world, events, attacked) if len(attacked) else np.zeros(0, np.int64)
    att_off = (np.cumsum(att_len) - att_len).astype(np.int64)
    receipts = liquidity == L_RECEIPTS
    fund_space = E * min(cap, max(policy.max_receipts, 0)) + 1 if receipts else 1
    stack = max(1 << 16, 8 * (policy.terminal_max_offline_payments + cap) + 1024)
    tr = _sizes(scenario, world)
    return State(
        sc=sc,
        k=np.arange(16, dtype=np.int64),
        bank_order=bank_order,
        P=people,
        C=cards,
        M=shops,
        E32=e32,
        E64=e64,
        E8=e8,
        BK=np.stack([wallets, wallets.copy(), np.zeros(B, np.int64)]),
        AT=np.stack([att_off, att_len.astype(np.int64)]),
        att_map=np.full(int(att_len.sum()) + 1, -1, np.int64),
        blocked_list=np.zeros(P + 1, np.int64),
        c_log=np.full((slots, cap), -1, np.int32),
        fund_flat=np.zeros(fund_space, np.int32),
        rf_list=np.zeros(max(E, 1), np.int32),
        stk=np.zeros(stack, np.int64),
        flag=np.zeros(stack, np.int8),
        tr=tr,
        msg=np.zeros(E, np.int32),
        nb=np.zeros(E, np.int64),
        stor=np.full(P, tr[TR_B_P], np.int64),
        psz=np.zeros(E if receipts else 1, np.int32),
    )


def _sizes(scenario: Scenario, world: World) -> np.ndarray:
    """The sizes the kernel composes per event (``TR_*``), from one real payment, refusal and
    sync of each kind on real devices of this scenario (:func:`.traffic.calibrate_cards`)."""
    c = calibrate_cards(scenario, world.banks[0])

    def both(label: str) -> int:
        return c[f"{label}_sent"] + c[f"{label}_got"]

    pay = c["pay"]  # a payment as signed: in the card, the module's record, every sync
    hop = c["pay_hop"] - pay  # what sealing it to the payee adds on the card's link
    tail = c["PAY_got"] - c["pay_hop"]  # the status word after the payment
    head = c["PAY_sent"] - c["request_payment_got"]  # a command's header before its data
    seal = c["accept_payment_got"] - pay
    ident, ask = both("GET_IDENTITY"), both("REQUEST_PAYMENT")
    pin = both("GET_CHALLENGE") + both("VERIFY_PIN")  # enciphered to the card's challenge
    shop_pin = pin + both("encipher_pin")  # and, in a shop, through the module's PIN pad
    shop = ident + both("request_payment") + shop_pin + c["PAY_sent"] + tail
    p2p = ident + ask + pin + head + c["REQUEST_PAYMENT_got"] + tail + pin + head
    tr = np.zeros(NTR, np.int64)
    tr[TR_PAY_SHOP] = pay
    tr[TR_PAY_P2P] = c["RECEIVE_sent"] - head - hop
    tr[TR_SHOP_OK] = shop + seal + 2 * hop  # the card's answer and the module's input, sealed
    tr[TR_SHOP_DUP] = shop + 2 * hop
    tr[TR_SHOP_CARD] = ident + both("request_payment") + shop_pin + c["pay_refused"]
    tr[TR_SHOP_CARD] += c["GET_LAST_PAYMENT_sent"] + c["cancel_request_sent"]
    tr[TR_LAST_HEAD] = c["GET_LAST_PAYMENT_got"] - pay
    tr[TR_LAST_NONE] = c["never_GET_LAST_PAYMENT_got"]
    tr[TR_SHOP_TERM] = ident + c["request_refused"]
    tr[TR_ASK_REFUSED] = ident + c["ask_refused"]
    tr[TR_P2P_PAYER] = ident + ask + pin + c["pay_refused_p2p"] + both("DECLINE_REQUEST")
    tr[TR_P2P_OK] = p2p + c["RECEIVE_got"] + 2 * hop  # the payer card's answer, RECEIVE
    tr[TR_P2P_RECV] = p2p + c["never_GET_LAST_PAYMENT_got"] + both("DECLINE_REQUEST") + 2 * hop
    tr[TR_S_CONFIRM] = c["card-session_got"] + both("APPLY_INSTRUCTION")
    tr[TR_S_CONFIRM] += c["card-confirmation_sent"]
    tr[TR_S_COMMON] = tr[TR_S_CONFIRM] + c["card-confirmation_got"] + both("GET_STATUS")
    tr[TR_S_BEGIN_SYNC] = c["BEGIN_ONLINE_sent"]
    tr[TR_S_BEGIN_TOPUP] = c["first_BEGIN_ONLINE_sent"]
    tr[TR_S_CARRY_FIRST] = c["first_BEGIN_ONLINE_got"] + c["first_card-session_sent"]
    tr[TR_S_CARRY] = c["BEGIN_ONLINE_got"] + c["card-session_sent"]
    tr[TR_S_ENTRY] = c["BEGIN_ONLINE_entry"]
    tr[TR_S_DECL] = c["decline"]
    tr[TR_PIN] = pin
    tr[TR_T_SYNC] = c["begin_sync_got"] + both("terminal-upload") + both("apply_instruction")
    tr[TR_T_SEAL] = seal
    tr[TR_T_UPREC] = c["upload_record"] - pay
    tr[TR_B_P] = c["blob_personalised"]
    tr[TR_B_I] = c["blob_instruction"]
    tr[TR_B_LAST] = c["blob_last"]
    tr[TR_B_ENTRY] = c["blob_entry"]
    tr[TR_B_DECL] = c["blob_declined"]
    tr[TR_B_SESS] = c["blob_session"]
    tr[TR_LIST_BASE] = c["list_base"]
    tr[TR_LIST_DEVICE] = c["list_device"]
    tr[TR_B_REVOKED] = c["blob_revoked"]
    tr[TR_B_OPEN] = c["blob_open"]
    tr[TR_T_DECL] = c["upload_declined"]
    return tr


_ERRORS = {
    ERR_CONSERVATION: "money is not conserved",
    ERR_NEGATIVE: "a wallet went below zero",
    ERR_STACK: "the settlement stack is full",
    ERR_SEQ: "a broken card's counter went past its bound",
    ERR_SPACE: "the funding receipts' space is full",
}


def _raise(S: State, err: int) -> None:
    event = int(S.sc[ERR_EVENT])
    message = f"{_ERRORS.get(err, 'model error')} after event {event}"
    if err == ERR_CONSERVATION:
        wallets = S.BK[F_BANK_WALLETS].tolist()
        raise ConservationError(
            f"{message}: issued {int(S.sc[ISSUED])}, held {sum(wallets)} in wallets and "
            f"{int(S.sc[POOL_AVAIL])} in the pool; wallets per intermediary {wallets}, "
            f"holdings {S.BK[F_HOLDINGS].tolist()}"
        )
    raise ModelError(message)


def _audit(S: State, world: World) -> None:
    """The running totals against the wallets themselves."""
    banks = len(world.banks)
    wallets = np.bincount(S.P[F_PB], weights=S.P[F_ONLINE] + S.P[F_SHADOW], minlength=banks)
    wallets = wallets + np.bincount(S.M[F_MB], weights=S.M[F_MWALLET], minlength=banks)
    if not np.array_equal(wallets.astype(np.int64), S.BK[F_BANK_WALLETS]):
        raise ConservationError(
            f"the wallets add up to {wallets.tolist()}, the running totals say "
            f"{S.BK[F_BANK_WALLETS].tolist()}"
        )


def run_fast(
    scenario: Scenario,
    world: World,
    events: Events,
    progress: Callable[[int], None] | None = None,
    *,
    _break_at: int = -1,
) -> Results:
    """The results of ``events`` under the balance scheme's rules; ``progress`` is told how
    many events are done, about every 1 %. ``_break_at``: the first credit at or after this
    event is made one minor unit too large (the test that the model's check catches a broken
    move)."""
    S = _state(scenario, world, events, _break_at)
    n = len(events)
    step = max(1, -(-n // 100))
    columns = (events.t, events.kind, events.a, events.b, events.amount, events.cut)
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        err = _run(S, *columns, i0, i1)
        if err:
            _raise(S, int(err))
        if progress is not None:
            progress(i1)
    _audit(S, world)
    r = Results.empty(n, world.people, world.merchants, len(world.banks))
    r.outcome[:] = S.E32[F_OUTCOME]
    r.moved[:] = S.E64[F_MOVED]
    r.settled_at[:] = S.E32[F_SETTLED_AT]
    r.queued_at[:] = S.E32[F_QUEUED_AT]
    r.pool_drawn[:] = S.E64[F_POOL_DRAWN]
    r.refunded[:] = S.E8[F_REFUND_STATE] == 2
    r.pool_after[:] = S.E64[F_POOL_AFTER] if scenario.liquidity.pool else 0
    P = world.people
    r.person_online[:] = S.P[F_ONLINE]
    r.person_shadow[:] = S.P[F_SHADOW]
    r.person_card[:] = S.C[F_C_BAL, :P]
    r.person_blocked[:] = S.P[F_STATUS] != 0
    r.merchant_wallet[:] = S.M[F_MWALLET]
    r.bank_holdings[:] = S.BK[F_HOLDINGS]
    r.pool_outstanding = int(S.sc[POOL_OUT])
    r.losses = int(S.sc[LOSSES])
    r.loss_bound = int(S.P[F_LOSS_DEV].sum()) * int(S.sc[CMAX_BAL])
    r.extra.update(messages=S.msg, bytes=S.nb, storage=S.stor)
    return r
