"""The token scheme's fast executor: the rules of :mod:`.tokens_real` (read its docstring for
what each event means) re-stated over state arrays compiled with numba, never one Python
object per payment.

A token is a row: its value, the element whose key owns it, the transition that made it, its
arrival in the element, whether it is held, the payment that delivered it, and what the
central bank recorded as consuming it. A transition is a row naming its parents. The ancestry
of a token is the set of tokens consumed in its history (walked with a stamp, each token once,
as the verifier does); two different transitions consuming one token in a history, or against
the central bank's record, is a double spend. Every choice follows the applet: ``select``
(exact token, else the smallest bigger one split, else the biggest merged then split), tokens
listed by value then arrival; the app's deposit, renewal and withdrawal with their order of
checks; revocation lists learnt from answers only (the app's sync opens each online moment);
the payer's limits on spending over time on its clock, as ``offpay.spending`` states them.

After every event the model checks its books: issued = online wallets + tokens outstanding
(minted − redeemed); tokens in elements − copies restored + value burned at deposit + value
signed to a receiver that could not store it = outstanding; the
intermediaries' holdings = the online wallets. A violation raises ``ConservationError``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from offpay.sim.network import ConservationError
from offpay.sim.population.events import Events, Kind, World
from offpay.sim.population.outcomes import INDEX, Results
from offpay.sim.population.scenario import Scenario
from offpay.sim.population.traffic import calibrate_tokens

# token fields (int32 matrix TI); FLAGS: HELD (in an element's list), CLEARED (the history
# was walked, no double spend, not longer than the policy's depth: a history never changes, so
# renewal need not walk it again) and, above them, the payee's online moment (its EPOCH + 1)
# before which a person-to-person payment delivered it. SIZE: its encoded size, ancestry
# included (a root's calibrated size, plus what each transition adds: see
# :func:`~.traffic.calibrate_tokens`). A row is what a million people's tokens cost in memory:
# keep it narrow.
OWN, MADE, NEXT, PREV, PAY, STAMP, TCONS, CB, FLAGS, SIZE = range(10)
TFIELDS = 10
HELD, CLEARED, RECEIVED = 1, 2, 4  # bits of FLAGS; RECEIVED: the moment's lowest bit
# token values (int64 matrix TV, one column)
VAL = 0
# element fields (int64 matrix EI); the held tokens are a list from HEAD to TAIL: tokens sorted
# by value, then arrival (the applet's listing), then those that arrived since, in arrival
# order; UNSORTED says there are such (sorted on the next listing); BAL their value, COUNT
# their number, PEND how many of them are not CLEARED, HSIZE their encoded size; then its
# spending counters (offpay.spending.Spending, in minutes from the start; -1: none): CLOCK,
# SYNCED (the intermediary's time at its last online moment), SPENT (since then), DAY and the
# day's payments DAYN and amount DAYSP
(HEAD, KNOWN, REVV, BROKEN, CSTART, CCOUNT, ONLINE, BANK, EPOCH, TAIL, BAL, COUNT, PEND,
 UNSORTED, HSIZE, CLOCK, SYNCED, SPENT, DAY, DAYN, DAYSP) = range(21)  # fmt: skip
EFIELDS = 21
MINUTES_A_DAY = 24 * 60
# globals (int64 vector G)
# and the event's traffic (MSGS messages, BYTES their bytes), then the sizes calibrated on real
# elements, apps and desks (Z_*, the keys of :func:`~.traffic.calibrate_tokens`)
(NT, NR, NPAR, CVER, STAMPC, MINTED, REDEEMED, BURNED, RESURRECTED, HELDSUM, ONLINESUM,
 ISSUED, NCOPY, BROKE, LOST, MSGS, BYTES) = range(17)  # fmt: skip
SIZES = (
    "root", "split", "transfer", "merge", "proof", "hello_sent", "hello_got", "proof_sent",
    "proof_got", "offer_sent", "offer_got", "transfer_sent", "transfer_got", "vault_sent",
    "vault_got", "deposit_sent", "deposit_got", "address", "renewal_got", "withdraw_sent",
    "withdraw_got", "listed", "sync_sent", "sync_got",
)  # fmt: skip
(Z_ROOT, Z_SPLIT, Z_TRANSFER, Z_MERGE, Z_PROOF, Z_HELLO_SENT, Z_HELLO_GOT, Z_PROOF_SENT,
 Z_PROOF_GOT, Z_OFFER_SENT, Z_OFFER_GOT, Z_TRANSFER_SENT, Z_TRANSFER_GOT, Z_VAULT_SENT,
 Z_VAULT_GOT, Z_DEPOSIT_SENT, Z_DEPOSIT_GOT, Z_ADDRESS, Z_RENEWAL_GOT, Z_WITHDRAW_SENT,
 Z_WITHDRAW_GOT, Z_LISTED, Z_SYNC_SENT, Z_SYNC_GOT) = range(
    BYTES + 1, BYTES + 1 + len(SIZES))  # fmt: skip
PAYMAX = BYTES + 1 + len(SIZES)  # the policy's per-payment maximum; -1: none
ANCMAX = PAYMAX + 1  # token_max_ancestry: the most ancestors a token taken offline carries
HOLDMAX = PAYMAX + 2  # element_max_holding: the most value an element holds after a receipt
# the payer's limits on spending over time (-1: none): card_max_offline_spent,
# card_max_daily_payments, card_max_daily_spent, max_offline_hours (in minutes)
SPENTMAX, DAYNMAX, DAYSPMAX, HOURSMAX = range(PAYMAX + 3, PAYMAX + 7)
GFIELDS = HOURSMAX + 1
REDEEMED_BY = -2  # the "transition" that consumes a token the central bank redeemed

C_OK = INDEX["ok"]
C_UNREACHABLE = INDEX["offline.unreachable"]
C_FUNDS = INDEX["funds.insufficient"]
C_DOUBLE = INDEX["token.double_spend"]
C_REFUSED = INDEX["refused"]
C_TREVOKED = INDEX["token.revoked"]
C_CREVOKED = INDEX["crypto.revoked"]
C_PAY_MAX = INDEX["limit.payment_max"]
C_ANCESTRY = INDEX["limit.token_max_ancestry"]
C_HOLDING = INDEX["limit.element_max_holding"]
C_SPENT = INDEX["limit.card_max_offline_spent"]
C_DAY_N = INDEX["limit.card_max_daily_payments"]
C_DAY_SPENT = INDEX["limit.card_max_daily_spent"]
C_HOURS = INDEX["limit.max_offline_hours"]
C_CONSERVATION = -100
C_FULL = -101

K_SHOP, K_P2P, K_ONLINE, K_SHOP_ONLINE = int(Kind.SHOP), int(Kind.P2P), int(Kind.ONLINE), 3
K_CLONE, K_CLONE_SHOP = int(Kind.CLONE), int(Kind.CLONE_SHOP)


# -- element lists --------------------------------------------------------------------------------


@njit(cache=True)
def _add(TI, TV, EI, G, e, row):
    """Store a token at the list's tail (it arrived last); the list stays sorted if nothing
    held is worth more. A shop that receives all day is sorted once, when it lists."""
    value = TV[row, VAL]
    TI[row, FLAGS] |= HELD
    G[HELDSUM] += value
    EI[e, BAL] += value
    EI[e, COUNT] += 1
    EI[e, HSIZE] += TI[row, SIZE]
    if not TI[row, FLAGS] & CLEARED:
        EI[e, PEND] += 1
    prev = EI[e, TAIL]
    TI[row, PREV], TI[row, NEXT] = prev, -1
    if prev < 0:
        EI[e, HEAD] = row
    else:
        TI[prev, NEXT] = row
        if TV[prev, VAL] > value:
            EI[e, UNSORTED] = 1
    EI[e, TAIL] = row


@njit(cache=True)
def _sort(TI, TV, EI, e, buf):
    """Relink the list by value, then arrival. Every token after the sorted part arrived
    later than all of it, in arrival order, so a stable sort by value alone is enough."""
    if not EI[e, UNSORTED]:
        return
    EI[e, UNSORTED] = 0
    n, cur = 0, EI[e, HEAD]
    while cur >= 0:
        if 4 * n >= buf.shape[0]:
            raise ValueError("an element holds more tokens than the model has room for")
        buf[n] = cur
        n += 1
        cur = TI[cur, NEXT]
    values = np.empty(n, np.int64)
    for k in range(n):
        values[k] = TV[buf[k], VAL]
    order = np.argsort(values, kind="mergesort")
    prev = -1
    for k in range(n):
        row = buf[order[k]]
        TI[row, PREV] = prev
        if prev < 0:
            EI[e, HEAD] = row
        else:
            TI[prev, NEXT] = row
        prev = row
    TI[prev, NEXT] = -1
    EI[e, TAIL] = prev


@njit(cache=True)
def _remove(TI, TV, EI, G, e, row):
    prev, after = TI[row, PREV], TI[row, NEXT]
    if prev < 0:
        EI[e, HEAD] = after
    else:
        TI[prev, NEXT] = after
    if after < 0:
        EI[e, TAIL] = prev
    else:
        TI[after, PREV] = prev
    TI[row, FLAGS] &= ~HELD
    G[HELDSUM] -= TV[row, VAL]
    EI[e, BAL] -= TV[row, VAL]
    EI[e, COUNT] -= 1
    EI[e, HSIZE] -= TI[row, SIZE]
    if not TI[row, FLAGS] & CLEARED:
        EI[e, PEND] -= 1


@njit(cache=True)
def _is_copy(EI, COPY, e, row):
    for k in range(EI[e, CSTART], EI[e, CSTART] + EI[e, CCOUNT]):  # noqa: SIM110 - numba compiles the loop, not any()
        if COPY[k] == row:
            return True
    return False


@njit(cache=True)
def _held(TI, TV, EI, COPY, e, only, buf):
    """The element's tokens by value, then arrival (in ``buf``); their count."""
    _sort(TI, TV, EI, e, buf)
    n, cur = 0, EI[e, HEAD]
    while cur >= 0:
        if not only or _is_copy(EI, COPY, e, cur):
            if 4 * n >= buf.shape[0]:
                raise ValueError("an element holds more tokens than the model has room for")
            buf[n] = cur
            n += 1
        cur = TI[cur, NEXT]
    return n


@njit(cache=True)
def _at_least(TI, TV, EI, COPY, e, amount, only, buf):
    """The first token in the listing worth ``amount`` or more (-1: none)."""
    _sort(TI, TV, EI, e, buf)
    cur = EI[e, HEAD]
    while cur >= 0 and (TV[cur, VAL] < amount or (only and not _is_copy(EI, COPY, e, cur))):
        cur = TI[cur, NEXT]
    return cur


@njit(cache=True)
def _balance(TI, TV, EI, COPY, e, only):
    if not only:
        return EI[e, BAL]
    total, cur = 0, EI[e, HEAD]
    while cur >= 0:
        if not only or _is_copy(EI, COPY, e, cur):
            total += TV[cur, VAL]
        cur = TI[cur, NEXT]
    return total


# -- rows and transitions -------------------------------------------------------------------------


@njit(cache=True)
def _new_token(TI, TV, G, value, owner, made, size):
    row = G[NT]
    G[NT] += 1
    TI[row, OWN], TI[row, MADE], TI[row, NEXT], TI[row, PAY] = owner, made, -1, -1
    TI[row, STAMP], TI[row, TCONS], TI[row, CB] = 0, -1, -1
    TI[row, PREV] = -1
    TI[row, FLAGS] = CLEARED if made < 0 else 0  # a minted token has no history
    TV[row, VAL] = value
    TI[row, SIZE] = size
    return row


@njit(cache=True)
def _new_transition(RT, PAR, G, parents, n):
    tr = G[NR]
    G[NR] += 1
    RT[tr, 0], RT[tr, 1] = G[NPAR], n
    for k in range(n):
        PAR[G[NPAR] + k] = parents[k]
    G[NPAR] += n
    return tr


@njit(cache=True)
def _history(TI, RT, RS, PAR, G, row, hp, ht):
    """Walk a token's history: (ancestors, first token consumed twice or -1); the consumed
    pairs (token, transition) in ``hp``/``ht``."""
    G[STAMPC] += 1
    cur = G[STAMPC]
    stack = ht[len(ht) // 2 :]  # the second half of the scratch holds the stack
    top = 0
    if TI[row, MADE] >= 0:
        stack[0] = TI[row, MADE]
        RS[TI[row, MADE]] = cur
        top = 1
    return _walk(TI, RT, RS, PAR, cur, top, hp, ht)


@njit(cache=True)
def _histories(TI, RT, RS, PAR, G, rows, n, hp, ht):
    """Walk the histories of ``rows[:n]`` as one: the first token that two different
    transitions consume in any of them, or across them (-1: none)."""
    G[STAMPC] += 1
    cur = G[STAMPC]
    stack = ht[len(ht) // 2 :]
    top = 0
    for k in range(n):
        made = TI[rows[k], MADE]
        if made >= 0 and RS[made] != cur:
            RS[made] = cur
            stack[top] = made
            top += 1
    return _walk(TI, RT, RS, PAR, cur, top, hp, ht)[1]


@njit(cache=True)
def _walk(TI, RT, RS, PAR, cur, top, hp, ht):
    """The walk from the transitions on the stack (``top`` of them, stamped ``cur``)."""
    stack = ht[len(ht) // 2 :]
    n, clash = 0, -1
    while top > 0:
        top -= 1
        tr = stack[top]
        for k in range(RT[tr, 0], RT[tr, 0] + RT[tr, 1]):
            p = PAR[k]
            if TI[p, STAMP] != cur:
                TI[p, STAMP] = cur
                TI[p, TCONS] = tr
                hp[n], ht[n] = p, tr
                n += 1
                made = TI[p, MADE]
                if made >= 0 and RS[made] != cur:
                    RS[made] = cur
                    stack[top] = made
                    top += 1
            elif TI[p, TCONS] != tr and clash < 0:
                clash = p
    return n, clash


@njit(cache=True)
def _revoke(EI, G, e):
    if EI[e, REVV] == 0:
        G[CVER] += 1
        EI[e, REVV] = G[CVER]


@njit(cache=True)
def _knows_revoked(EI, knower_version, e):
    return EI[e, REVV] > 0 and EI[e, REVV] <= knower_version


# -- the applet ---------------------------------------------------------------------------


@njit(cache=True)
def _split(TI, TV, RT, PAR, EI, G, e, row, amount, one):
    one[0] = row
    tr = _new_transition(RT, PAR, G, one, 1)
    _remove(TI, TV, EI, G, e, row)
    size = TI[row, SIZE] + G[Z_SPLIT]
    wanted = _new_token(TI, TV, G, amount, e, tr, size)
    change = _new_token(TI, TV, G, TV[row, VAL] - amount, e, tr, size)
    _add(TI, TV, EI, G, e, wanted)
    _add(TI, TV, EI, G, e, change)
    return wanted


@njit(cache=True)
def _merge(TI, TV, RT, RS, PAR, EI, G, e, picked, n, hp, ht):
    """(child, code): each parent verified, then checked against the others' histories. The
    applet checks the first parent, then whether the element knows itself revoked, then each
    further parent and the histories across parents: one walk of all of them finds the same
    double spends as a walk per parent and a comparison of their consumed tokens."""
    if _knows_revoked(EI, EI[e, KNOWN], e):  # only the first parent's own walk comes first
        if _history(TI, RT, RS, PAR, G, picked[0], hp, ht)[1] >= 0:
            return -1, C_DOUBLE
        return -1, C_TREVOKED
    if _histories(TI, RT, RS, PAR, G, picked, n, hp, ht) >= 0:
        return -1, C_DOUBLE
    total, size = 0, G[Z_MERGE]
    for k in range(n):
        total += TV[picked[k], VAL]
        size += TI[picked[k], SIZE] + G[Z_PROOF]
    tr = _new_transition(RT, PAR, G, picked, n)
    for k in range(n):
        _remove(TI, TV, EI, G, e, picked[k])
    child = _new_token(TI, TV, G, total, e, tr, size)
    _add(TI, TV, EI, G, e, child)
    return child, C_OK


@njit(cache=True)
def _select(TI, TV, RT, RS, PAR, EI, COPY, G, e, amount, only, buf, hp, ht):
    """(token worth exactly amount, code), as ``TokenElement.select``."""
    if _balance(TI, TV, EI, COPY, e, only) < amount:
        return -1, C_FUNDS
    row = _at_least(TI, TV, EI, COPY, e, amount, only, buf)
    if row >= 0 and TV[row, VAL] == amount:
        return row, C_OK
    if row >= 0:
        return _split(TI, TV, RT, PAR, EI, G, e, row, amount, hp), C_OK
    n = _held(TI, TV, EI, COPY, e, only, buf)
    # by value descending, equal values in listing order (a stable sort of the listing)
    picked = buf[n:]
    m, total, k = 0, 0, n - 1
    while k >= 0 and total < amount:
        j = k
        while j > 0 and TV[buf[j - 1], VAL] == TV[buf[k], VAL]:
            j -= 1
        for q in range(j, k + 1):
            if total >= amount:
                break
            picked[m] = buf[q]
            total += TV[buf[q], VAL]
            m += 1
        k = j - 1
    child, code = _merge(TI, TV, RT, RS, PAR, EI, G, e, picked, m, hp, ht)
    if code != C_OK or TV[child, VAL] == amount:
        return child, code
    return _split(TI, TV, RT, PAR, EI, G, e, child, amount, hp), C_OK


@njit(cache=True)
def _transfer(TI, TV, RT, PAR, EI, G, e, row, owner, one):
    """The whole token to ``owner`` (an element, or a vault: -1 - bank): the child's row."""
    one[0] = row
    tr = _new_transition(RT, PAR, G, one, 1)
    _remove(TI, TV, EI, G, e, row)
    return _new_token(TI, TV, G, TV[row, VAL], owner, tr, TI[row, SIZE] + G[Z_TRANSFER])


@njit(cache=True)
def _message(G, sent, answered):
    """One message of the event being played: its request's and answer's bytes (an answer
    of 0: refused where it arrived, as :class:`~.traffic.Traffic` counts a refusal)."""
    G[MSGS] += 1
    G[BYTES] += sent + answered


@njit(cache=True)
def _receipt_limits(EI, G, e, value, ancestors):
    """TokenElement.check_limits: element ``e`` taking a token worth ``value`` with
    ``ancestors``; a minted token (none) is held to the holding limit only."""
    if ancestors > 0:
        if G[PAYMAX] >= 0 and value > G[PAYMAX]:
            return C_PAY_MAX
        if G[ANCMAX] >= 0 and ancestors > G[ANCMAX]:
            return C_ANCESTRY
    if G[HOLDMAX] >= 0 and EI[e, BAL] + value > G[HOLDMAX]:
        return C_HOLDING
    return C_OK


@njit(cache=True)
def _at(EI, e, time):
    """Spending.at: element ``e``'s clock after a signed time (-1: none), never moved back,
    and its day with that day's counters: (clock, day, payments, amount)."""
    clock = EI[e, CLOCK]
    if time >= 0 and (clock < 0 or time > clock):
        clock = time
    day = clock // MINUTES_A_DAY if clock >= 0 else np.int64(-1)
    if day >= 0 and (EI[e, DAY] < 0 or day > EI[e, DAY]):
        return clock, day, np.int64(0), np.int64(0)
    return clock, EI[e, DAY], EI[e, DAYN], EI[e, DAYSP]


@njit(cache=True)
def _tell(EI, e, time):
    """TokenElement.tell_time: the phone's time."""
    EI[e, CLOCK], EI[e, DAY], EI[e, DAYN], EI[e, DAYSP] = _at(EI, e, time)


@njit(cache=True)
def _synced(EI, e, t):
    """Spending.synced: an online moment at the intermediary's time ``t``."""
    EI[e, CLOCK] = t
    EI[e, SYNCED] = t
    EI[e, SPENT] = 0
    day = t // MINUTES_A_DAY
    if EI[e, DAY] < 0 or day < EI[e, DAY]:
        EI[e, DAY] = day


@njit(cache=True)
def _spending_limits(EI, G, e, amount, peer_clock):
    """Spending.check for the payer ``e`` at the counterparty's clock, after payment_max."""
    clock, _, day_n, day_spent = _at(EI, e, peer_clock)
    if G[HOURSMAX] >= 0:
        synced = EI[e, SYNCED]
        if synced < 0 or clock < 0 or clock - synced > G[HOURSMAX]:
            return C_HOURS
    if G[SPENTMAX] >= 0 and EI[e, SPENT] + amount > G[SPENTMAX]:
        return C_SPENT
    if G[DAYNMAX] >= 0 and day_n + 1 > G[DAYNMAX]:
        return C_DAY_N
    if G[DAYSPMAX] >= 0 and day_spent + amount > G[DAYSPMAX]:
        return C_DAY_SPENT
    return C_OK


@njit(cache=True)
def _pay(TI, TV, RT, RS, PAR, EI, COPY, G, payer, payee, amount, only, event, epoch_flag, W, t):
    """The three phases between two elements, both phones at time ``t``: (code, ancestry of
    the token delivered)."""
    buf, hp, ht, one = W
    _tell(EI, payer, t)
    _tell(EI, payee, t)
    _message(G, G[Z_HELLO_SENT], G[Z_HELLO_GOT])
    if _knows_revoked(EI, EI[payer, KNOWN], payee) or _knows_revoked(EI, EI[payee, KNOWN], payer):
        return C_CREVOKED, -1
    _message(G, G[Z_PROOF_SENT], G[Z_PROOF_GOT])
    if G[PAYMAX] >= 0 and amount > G[PAYMAX]:  # the payer's element refuses to offer
        return C_PAY_MAX, -1
    peer_clock = EI[payee, CLOCK]  # signed in the payee's discovery proof
    code = _spending_limits(EI, G, payer, amount, peer_clock)
    if code != C_OK:
        return code, -1
    offered, code = _select(TI, TV, RT, RS, PAR, EI, COPY, G, payer, amount, only, buf, hp, ht)
    if code != C_OK:
        return code, -1
    m, clash = _history(TI, RT, RS, PAR, G, offered, hp, ht)  # the receiver verifies
    offer = G[Z_OFFER_SENT] + TI[offered, SIZE]
    if clash >= 0:
        _message(G, offer, 0)
        return C_DOUBLE, -1
    # TokenElement.check_offer's limits, for the child: one ancestor more than the offered
    code = _receipt_limits(EI, G, payee, amount, m + 1)
    if code != C_OK:
        _message(G, offer, 0)
        return code, -1
    _message(G, offer, G[Z_OFFER_GOT])
    child = _transfer(TI, TV, RT, PAR, EI, G, payer, offered, payee, one)
    # TokenElement.pay: the payment counted, at the counterparty's clock
    clock, day, day_n, day_spent = _at(EI, payer, peer_clock)
    EI[payer, CLOCK], EI[payer, DAY] = clock, day
    EI[payer, DAYN], EI[payer, DAYSP] = day_n + 1, day_spent + amount
    EI[payer, SPENT] += amount
    if _knows_revoked(EI, EI[payee, KNOWN], payee):
        # a receiver that knows itself revoked cannot store the token signed over to it:
        # the payer's element has signed already, and the value is lost
        G[LOST] += TV[child, VAL]
        _message(G, G[Z_TRANSFER_SENT] + TI[child, SIZE], 0)
        return C_TREVOKED, -1
    _message(G, G[Z_TRANSFER_SENT] + TI[child, SIZE], G[Z_TRANSFER_GOT])
    _add(TI, TV, EI, G, payee, child)
    TI[child, PAY] = event
    if epoch_flag:
        TI[child, FLAGS] |= (EI[payee, EPOCH] + 1) * RECEIVED
    return C_OK, m + 1


# -- online moments -----------------------------------------------------------------------


@njit(cache=True)
def _redeem(TI, TV, RT, RS, PAR, EI, BK, G, e, row, renew, t, settled, W):
    """``TokenWalletApp._return`` and the desk's deposit: the token signed to the vault,
    verified, redeemed; credited or renewed. A code."""
    _buf, hp, ht, one = W
    bank = EI[e, BANK]
    _message(G, G[Z_VAULT_SENT], G[Z_VAULT_GOT])
    v = _transfer(TI, TV, RT, PAR, EI, G, e, row, -1 - bank, one)
    value = TV[v, VAL]
    request = G[Z_DEPOSIT_SENT] + TI[v, SIZE] + (G[Z_ADDRESS] if renew else 0)
    if renew and _knows_revoked(EI, BK[bank, 0], e):
        G[BURNED] += value
        _message(G, request, 0)
        return C_TREVOKED
    m, clash = _history(TI, RT, RS, PAR, G, v, hp, ht)
    if clash >= 0:  # the vault's own check: reported, revoked, burned
        _revoke(EI, G, TI[clash, OWN])
        BK[bank, 0] = G[CVER]
        G[BURNED] += value
        _message(G, request, 0)
        return C_DOUBLE
    for q in range(m):
        if TI[hp[q], CB] != -1 and TI[hp[q], CB] != ht[q]:
            _revoke(EI, G, TI[hp[q], OWN])
            G[BURNED] += value
            _message(G, request, 0)
            return C_DOUBLE
    for q in range(m):
        p = hp[q]
        if TI[p, CB] == -1:
            TI[p, CB] = ht[q]
            if TI[p, PAY] >= 0:
                settled[TI[p, PAY]] = t
    TI[v, CB] = REDEEMED_BY
    BK[bank, 1] += value
    G[REDEEMED] += value
    BK[bank, 0] = G[CVER]
    listed = G[CVER] * G[Z_LISTED]  # every answer carries the whole revocation list
    if renew and EI[e, REVV] == 0:
        fresh = _new_token(TI, TV, G, value, e, -1, G[Z_ROOT])
        BK[bank, 1] -= value
        G[MINTED] += value
        EI[e, KNOWN] = G[CVER]
        _synced(EI, e, t)
        _add(TI, TV, EI, G, e, fresh)
        _message(G, request, G[Z_RENEWAL_GOT] + G[Z_ROOT] + listed)
        return C_OK
    _message(G, request, G[Z_DEPOSIT_GOT] + listed)
    EI[e, ONLINE] += value  # a deposit, or a renewal the mint refused: to the online wallet
    G[ONLINESUM] += value
    EI[e, KNOWN] = G[CVER]
    _synced(EI, e, t)  # every answer is an online moment
    return C_OK


@njit(cache=True)
def _renew_long(TI, TV, RT, RS, PAR, EI, COPY, BK, G, e, max_ancestry, t, settled, W):
    """The app's ``renew_long``: each held token's history walked in listing order (a double
    spend or a known revocation stops it), the long ones renewed. A CLEARED token's walk would
    find nothing, so it is skipped, and an element holding only such tokens is answered at
    once: a merchant's deposits after an outage stay linear in its tokens."""
    buf, hp, ht, _one = W
    if EI[e, PEND] == 0:
        if EI[e, COUNT] > 0 and _knows_revoked(EI, EI[e, KNOWN], e):
            return C_TREVOKED
        return C_OK
    n = _held(TI, TV, EI, COPY, e, False, buf)
    rows = buf[n : 2 * n]
    rows[:] = buf[:n]
    for k in range(n):
        row, m = rows[k], 0
        if not TI[row, FLAGS] & CLEARED:
            m, clash = _history(TI, RT, RS, PAR, G, row, hp, ht)
            if clash >= 0:
                return C_DOUBLE
        if _knows_revoked(EI, EI[e, KNOWN], e):
            return C_TREVOKED
        if m > max_ancestry:
            code = _redeem(TI, TV, RT, RS, PAR, EI, BK, G, e, row, True, t, settled, W)
            if code != C_OK:
                return code
        elif not TI[row, FLAGS] & CLEARED:
            TI[row, FLAGS] |= CLEARED
            EI[e, PEND] -= 1
    return C_OK


@njit(cache=True)
def _deposit(TI, TV, RT, RS, PAR, EI, COPY, BK, G, e, amount, max_ancestry, t, settled, W):
    buf, hp, ht, _one = W
    row, code = _select(TI, TV, RT, RS, PAR, EI, COPY, G, e, amount, False, buf, hp, ht)
    if code != C_OK:
        return code
    code = _redeem(TI, TV, RT, RS, PAR, EI, BK, G, e, row, False, t, settled, W)
    if code != C_OK:
        return code
    return _renew_long(TI, TV, RT, RS, PAR, EI, COPY, BK, G, e, max_ancestry, t, settled, W)


@njit(cache=True)
def _withdraw(TI, TV, RT, RS, PAR, EI, COPY, BK, G, e, amount, max_ancestry, t, settled, W):
    code = _receipt_limits(EI, G, e, amount, 0)  # the app asks the element first
    if code != C_OK:
        return code
    if EI[e, REVV] > 0:  # the mint refuses a revoked element's key; the wallet is refunded
        _message(G, G[Z_WITHDRAW_SENT], 0)
        return C_TREVOKED
    bank = EI[e, BANK]
    EI[e, ONLINE] -= amount
    G[ONLINESUM] -= amount
    BK[bank, 1] -= amount
    G[MINTED] += amount
    BK[bank, 0] = G[CVER]
    EI[e, KNOWN] = G[CVER]
    _synced(EI, e, t)
    _message(G, G[Z_WITHDRAW_SENT], G[Z_WITHDRAW_GOT] + G[Z_ROOT] + G[CVER] * G[Z_LISTED])
    _add(TI, TV, EI, G, e, _new_token(TI, TV, G, amount, e, -1, G[Z_ROOT]))
    return _renew_long(TI, TV, RT, RS, PAR, EI, COPY, BK, G, e, max_ancestry, t, settled, W)


@njit(cache=True)
def _first(first, code):
    return code if first == C_OK else first


@njit(cache=True)
def _books(TI, TV, EI, BK, G):
    """The model's conservation checks (counters kept at different places must agree)."""
    outstanding = G[MINTED] - G[REDEEMED]
    if G[ISSUED] != G[ONLINESUM] + outstanding:
        return False
    if G[HELDSUM] - G[RESURRECTED] + G[BURNED] + G[LOST] != outstanding:
        return False
    return BK[:, 1].sum() == G[ONLINESUM]


@njit(cache=True)
def _run(
    kind, a, b, amount, t, cut, start, stop, people, top_up_to, max_ancestry,
    TI, TV, RT, RS, PAR, EI, COPY, BK, G, outcome, moved, settled, ancestry, W, margin,
    messages, carried, storage,
):  # fmt: skip
    """Events ``start``..``stop``; returns where it stopped (capacity) or a negative code."""
    buf, hp, ht, _one = W
    for i in range(start, stop):
        if G[NT] + margin > TI.shape[0] or G[NR] + margin > RT.shape[0]:
            return i
        if G[NPAR] + 2 * margin > PAR.shape[0] or G[NCOPY] + margin > COPY.shape[0]:
            return i
        k, x, y, ti = kind[i], a[i], b[i], t[i]
        depth = -1
        if k in (K_ONLINE, K_SHOP_ONLINE) and cut[i]:
            outcome[i] = C_UNREACHABLE
        elif k in (K_SHOP, K_P2P):
            payee = y if k == K_P2P else people + y
            code, depth = _pay(
                TI, TV, RT, RS, PAR, EI, COPY, G, x, payee, amount[i], False, i, k == K_P2P, W, ti
            )
            outcome[i] = code
            if code == C_OK:
                moved[i], ancestry[i] = amount[i], depth
        elif k == K_CLONE_SHOP:
            code = C_OK
            for c in range(EI[x, CSTART], EI[x, CSTART] + EI[x, CCOUNT]):
                row = COPY[c]
                if TI[row, FLAGS] & HELD:
                    continue
                m, clash = _history(TI, RT, RS, PAR, G, row, hp, ht)
                if clash >= 0:
                    code = C_DOUBLE
                elif _knows_revoked(EI, EI[x, KNOWN], x):
                    code = C_TREVOKED
                else:  # TokenElement.store checks the copy against the limits as it takes it
                    code = _receipt_limits(EI, G, x, TV[row, VAL], m)
                if code != C_OK:
                    break
                _add(TI, TV, EI, G, x, row)
                G[RESURRECTED] += TV[row, VAL]
            value = amount[i]
            if code == C_OK:
                if value == 0:
                    value = _balance(TI, TV, EI, COPY, x, True)
                if value == 0:
                    code = C_FUNDS
                else:
                    code, depth = _pay(
                        TI, TV, RT, RS, PAR, EI, COPY, G, x, people + y, value, True, i, False, W,
                        ti,
                    )  # fmt: skip
            outcome[i] = code
            if code == C_OK:
                moved[i], ancestry[i] = value, depth
        elif k == K_ONLINE:
            first = C_OK
            n = _held(TI, TV, EI, COPY, x, False, buf)
            values = buf[n : 2 * n]
            m = 0
            for q in range(n):
                if TI[buf[q], FLAGS] // RECEIVED == EI[x, EPOCH] + 1:
                    values[m] = TV[buf[q], VAL]
                    m += 1
            EI[x, EPOCH] += 1
            # TokenWalletApp.sync: the policy, the list and the intermediary's time
            _message(G, G[Z_SYNC_SENT], G[Z_SYNC_GOT] + G[CVER] * G[Z_LISTED])
            EI[x, KNOWN] = G[CVER]
            _synced(EI, x, ti)
            vals = np.empty(m, np.int64)
            vals[:] = values[:m]
            for q in range(m):
                code = _deposit(
                    TI, TV, RT, RS, PAR, EI, COPY, BK, G, x, vals[q], max_ancestry, ti, settled, W
                )
                first = _first(first, code)
            code = _renew_long(
                TI, TV, RT, RS, PAR, EI, COPY, BK, G, x, max_ancestry, ti, settled, W
            )
            first = _first(first, code)
            need = top_up_to - _balance(TI, TV, EI, COPY, x, False)
            want = min(need, EI[x, ONLINE])
            if want > 0:
                before = EI[x, ONLINE]
                code = _withdraw(
                    TI, TV, RT, RS, PAR, EI, COPY, BK, G, x, want, max_ancestry, ti, settled, W
                )
                first = _first(first, code)
                moved[i] = before - EI[x, ONLINE]
            outcome[i] = first
        elif k == K_SHOP_ONLINE:
            e = people + x
            first, before = C_OK, EI[e, ONLINE]
            n = _held(TI, TV, EI, COPY, e, False, buf)
            vals = np.empty(n, np.int64)
            for q in range(n):
                vals[q] = TV[buf[q], VAL]
            for q in range(n):
                code = _deposit(
                    TI, TV, RT, RS, PAR, EI, COPY, BK, G, e, vals[q], max_ancestry, ti, settled, W
                )
                first = _first(first, code)
            outcome[i] = first
            moved[i] = EI[e, ONLINE] - before
        elif k == K_CLONE:
            EI[x, BROKEN] = 1
            n = _held(TI, TV, EI, COPY, x, False, buf)
            EI[x, CSTART], EI[x, CCOUNT] = G[NCOPY], n
            for q in range(n):
                COPY[G[NCOPY] + q] = buf[q]
            G[NCOPY] += n
            G[BROKE] += _balance(TI, TV, EI, COPY, x, False)
        else:
            outcome[i] = C_REFUSED  # the balance scheme's attacks have no token meaning
        messages[i], carried[i] = G[MSGS], G[BYTES]
        G[MSGS] = G[BYTES] = 0
        if k != K_SHOP_ONLINE:  # what the person's element (and a payee's) holds now
            storage[x] = max(storage[x], EI[x, HSIZE])
            if k == K_P2P:
                storage[y] = max(storage[y], EI[y, HSIZE])
        if not _books(TI, TV, EI, BK, G):
            return C_CONSERVATION - i
    return stop


def run_fast_tokens(
    scenario: Scenario,
    world: World,
    events: Events,
    progress: Callable[[int], None] | None = None,
    sizes: dict[str, int] | None = None,
) -> Results:
    """The stream through the array model of the token scheme. ``sizes``: the messages' and
    tokens' sizes (:func:`~.traffic.calibrate_tokens`, measured on real elements when not
    given)."""
    people, merchants, n = world.people, world.merchants, len(events)
    elements = people + merchants
    # room for every row the run can need, allocated once: untouched pages of np.zeros take no
    # memory, whereas growing copies every row (the old and the new arrays live together)
    cap = max(1024, 4 * people + 4 * n + 1024)
    TI = np.zeros((cap, TFIELDS), np.int32)
    TV = np.zeros((cap, 1), np.int64)
    RT = np.zeros((cap, 2), np.int32)
    RS = np.zeros(cap, np.int32)
    PAR = np.zeros(2 * cap, np.int32)
    EI = np.zeros((elements, EFIELDS), np.int64)
    EI[:, HEAD] = EI[:, TAIL] = -1
    EI[:, CLOCK] = EI[:, SYNCED] = EI[:, DAY] = -1  # no signed time yet
    EI[:people, BANK] = world.person_bank
    EI[people:, BANK] = world.merchant_bank
    COPY = np.zeros(cap, np.int32)
    BK = np.zeros((len(world.banks), 2), np.int64)
    G = np.zeros(GFIELDS, np.int64)
    if sizes is None:
        sizes = calibrate_tokens(scenario, world.banks[0])
    for k, name in enumerate(SIZES):
        G[Z_ROOT + k] = sizes[name]
    most = scenario.policy.payment_max
    G[PAYMAX] = -1 if most is None else most.minor
    ancestry, holding = scenario.policy.token_max_ancestry, scenario.policy.element_max_holding
    G[ANCMAX] = -1 if ancestry is None else ancestry
    G[HOLDMAX] = -1 if holding is None else holding.minor
    policy = scenario.policy
    for field, at in (
        (policy.card_max_offline_spent, SPENTMAX),
        (policy.card_max_daily_payments, DAYNMAX),
        (policy.card_max_daily_spent, DAYSPMAX),
    ):
        G[at] = -1 if field is None else getattr(field, "minor", field)
    hours = policy.max_offline_hours
    G[HOURSMAX] = -1 if hours is None else hours * 60
    b = scenario.behaviour
    wallet, first = b.online_wallet, min(b.top_up_to, b.online_wallet)
    EI[:people, ONLINE] = wallet
    G[ONLINESUM] = G[ISSUED] = wallet * people
    np.add.at(BK[:, 1], world.person_bank, wallet)
    scratch = 1 << 16  # an element holds at most a quarter of this many tokens
    W = (
        np.zeros(scratch, np.int32),
        np.zeros(cap, np.int32),
        np.zeros(2 * cap, np.int32),
        np.zeros(4, np.int32),
    )
    results = Results.empty(n, people, merchants, len(world.banks))
    ancestry = np.full(n, -1, np.int32)
    if first:
        _top_up_all(TI, TV, EI, BK, G, people, first)
    messages = np.zeros(n, np.int32)
    carried = np.zeros(n, np.int64)
    storage = EI[:people, HSIZE].copy()
    margin, i = 4 * scratch, 0
    step = 1 << 18
    while i < n:
        stop = min(n, i + step)
        done = _run(
            events.kind, events.a, events.b, events.amount, events.t, events.cut, i, stop,
            people, b.top_up_to, scenario.tokens.max_ancestry,
            TI, TV, RT, RS, PAR, EI, COPY, BK, G,
            results.outcome, results.moved, results.settled_at, ancestry, W, margin,
            messages, carried, storage,
        )  # fmt: skip
        if done <= C_CONSERVATION:
            raise ConservationError(
                f"the token model lost or made money at event {C_CONSERVATION - done}"
            )
        if done < stop or G[NT] + margin + step * 4 > TI.shape[0]:
            TI, TV, RT, RS, PAR, COPY, W = _grow(TI, TV, RT, RS, PAR, COPY, W)
        i = done
        if progress is not None:
            progress(i)
    held = TV[: G[NT], VAL][(TI[: G[NT], FLAGS] & HELD) != 0].sum()
    if held != G[HELDSUM] or EI[:, BAL].sum() != held or EI[:, ONLINE].sum() != G[ONLINESUM]:
        raise ConservationError("the token model's counters disagree with its rows")
    results.person_online[:] = EI[:people, ONLINE]
    results.merchant_wallet[:] = EI[people:, ONLINE]
    results.person_card[:] = EI[:people, BAL]
    results.person_blocked[:] = EI[:people, REVV] > 0
    results.bank_holdings[:] = BK[:, 1]
    results.losses = int(G[BURNED])
    results.loss_bound = int(G[BROKE]) * scenario.attacks.payments
    results.extra.update(ancestry=ancestry, messages=messages, bytes=carried, storage=storage)
    results.extra["tokens_outstanding"] = np.array([G[MINTED] - G[REDEEMED]], np.int64)
    return results


@njit(cache=True)
def _top_up_all(TI, TV, EI, BK, G, people, amount):
    for e in range(people):
        EI[e, ONLINE] -= amount
        G[ONLINESUM] -= amount
        BK[EI[e, BANK], 1] -= amount
        G[MINTED] += amount
        _synced(EI, e, 0)  # the withdrawal's answer, at minute 0
        _add(TI, TV, EI, G, e, _new_token(TI, TV, G, amount, e, -1, G[Z_ROOT]))


def _grow(TI, TV, RT, RS, PAR, COPY, W):  # type: ignore[no-untyped-def]
    """Twice the room for token rows and transitions (between batches of events)."""

    def twice(x: np.ndarray) -> np.ndarray:
        out = np.zeros((2 * x.shape[0], *x.shape[1:]), x.dtype)
        out[: x.shape[0]] = x
        return out

    buf, hp, ht, one = W
    grown = (buf, twice(hp), twice(ht), one)
    return twice(TI), twice(TV), twice(RT), twice(RS), twice(PAR), twice(COPY), grown
