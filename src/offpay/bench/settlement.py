"""Settlement of a backlog: N offline payments made during an outage, then uploaded by sync.

The backlog is made through the real protocol (cards pay terminals through the PoS app, every
payment signed by both), by many cards at many terminals of both intermediaries; half of the
payments cross from one intermediary to the other. The limits policy is raised (a signed new
version, as an intermediary would publish it) so that one card holds up to ``per_card``
payments and one terminal up to ``per_terminal``: fewer devices for the same backlog, and the
upload per sync stays under the wire's 1 MiB message bound.

Only the settlement is timed: every terminal synchronises, the engine settles what it uploads.
A sample of the payer cards then uploads the same payments again, which must settle nothing.
Afterwards the notary, the debits and the credits must each count exactly N payments and money
must be conserved.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offpay.bench.instrument import count_crypto, count_sql
from offpay.crypto.keys import Algorithm
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.sim.network import Merchant, OfflineNetwork, User

Say = Callable[[str], None]
BANKS = ("bank-a", "bank-b")
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class BacklogPlan:
    """How a backlog of ``payments`` is spread over devices."""

    payments: int
    per_card: int = 100
    per_terminal: int = 250
    amount_minor: int = 100  # SEK 1.00 each
    resync_cards: int = 10  # payer cards that upload their logs again (exactly-once check)
    wave: int = 10_000  # payments made, then settled, at a time (bounds the devices' memory)

    @property
    def cards(self) -> int:
        return max(2, math.ceil(self.payments / self.per_card))

    @property
    def terminals_per_bank(self) -> int:
        # half the payments go to each bank's shops, give or take one partial round
        return max(1, math.ceil((self.payments / 2 + self.cards) / self.per_terminal))


def rss_bytes() -> int:
    """Resident memory of this process now (Linux), else the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def _children_cpu() -> float:
    """CPU seconds of this process's children that have exited (the verification workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _workers_cpu(net: OfflineNetwork) -> float:
    """CPU seconds of the verification workers still running (Linux /proc), per wave."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = {pid for bank in net.banks.values() for pid in bank.verifier.worker_pids()}
    for pid in pids:
        if pid:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            except (OSError, ValueError, IndexError):
                continue
    return total


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class _Progress:
    say: Say
    what: str
    total: int
    start: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)

    def tick(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            elapsed = now - self.start
            rate = done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            share = 100 * done / max(1, self.total)
            self.say(
                f"  {self.what}: {done:,}/{self.total:,} ({share:.0f} %), {rate:,.0f}/s, "
                f"{elapsed:,.0f} s elapsed, about {eta:,.0f} s to go"
            )


def raise_limits(net: OfflineNetwork, per_card: int, per_terminal: int, amount: int) -> None:
    """Publish a new limits policy at every intermediary, so that a card and a terminal hold a
    bigger part of the backlog; every other field of the current policy is kept."""
    for bank in net.banks.values():
        current = bank.current_policy()
        assert current is not None
        policy = current[1]
        card_balance = max(policy.card_max_balance.minor, per_card * amount)
        terminal_received = max(policy.terminal_max_received.minor, per_terminal * amount)
        bank.publish_policy(
            dataclasses.replace(
                policy,
                version=policy.version + 1,
                card_max_offline_transactions=max(per_card, policy.card_max_offline_transactions),
                card_max_balance=Money(card_balance, policy.currency),
                terminal_max_offline_payments=max(
                    per_terminal, policy.terminal_max_offline_payments
                ),
                terminal_max_received=Money(terminal_received, policy.currency),
            )
        )


def sqlite_urls(folder: Path) -> dict[str, str]:
    names = ("central-bank", *BANKS)
    return {name: f"sqlite+pysqlite:///{folder / (name + '.sqlite')}" for name in names}


def open_network(
    urls: Mapping[str, str], plan: BacklogPlan, algorithm: Algorithm
) -> OfflineNetwork:
    """The network the backlog is made and settled in, its limits raised for the plan."""
    net = OfflineNetwork(bank_names=BANKS, algorithm=algorithm, url_for=lambda n: urls[n])
    raise_limits(net, plan.per_card, plan.per_terminal, plan.amount_minor)
    return net


def make_wave(
    net: OfflineNetwork, plan: BacklogPlan, wave: int, payments: int, say: Say
) -> tuple[list[User], list[Merchant], float]:
    """New cards and terminals of both intermediaries, and ``payments`` offline payments made
    by those cards at those terminals and held by the terminals; returns the cards, the
    terminals and the seconds spent making the payments."""
    part = dataclasses.replace(plan, payments=payments)
    budget = plan.per_card * plan.amount_minor
    for bank in BANKS:
        net.issue(bank, budget * (part.cards // 2 + 1) + 1)
    say(
        f"  devices: {part.cards:,} cards, {2 * part.terminals_per_bank:,} terminals "
        f"(up to {plan.per_card} payments per card, {plan.per_terminal} per terminal)"
    )
    merchants = {
        bank: [
            net.add_merchant(f"shop-{bank}-{wave}-{i}", bank)
            for i in range(part.terminals_per_bank)
        ]
        for bank in BANKS
    }
    progress = _Progress(say, "cards issued and topped up", part.cards)
    users = []
    for i in range(part.cards):
        user = net.add_user(f"payer-{wave}-{i}", BANKS[i % 2], online=budget)
        user.phone.top_up(user.pin, net.money(budget))
        users.append(user)
        progress.tick(i + 1)
    # Payment p: card p % cards, in round p // cards; odd rounds pay a shop of the other bank,
    # so half the backlog crosses intermediaries. Shops of a bank are used round-robin.
    next_shop = dict.fromkeys(BANKS, 0)
    amount = net.money(plan.amount_minor)
    progress = _Progress(say, "offline payments made", payments)
    start = time.perf_counter()
    for p in range(payments):
        user = users[p % part.cards]
        payer_bank = user.bank.name
        bank = payer_bank if (p // part.cards) % 2 == 0 else _other(payer_bank)
        shops = merchants[bank]
        shop = shops[next_shop[bank] % len(shops)]
        next_shop[bank] += 1
        shop.pos.charge(user.card.process, user.pin, amount)
        progress.tick(p + 1)
    made = time.perf_counter() - start
    return users, [m for b in BANKS for m in merchants[b]], made


def _other(bank: str) -> str:
    return BANKS[1] if bank == BANKS[0] else BANKS[0]


def run(
    backend: str,
    plan: BacklogPlan,
    *,
    urls: Mapping[str, str] | None = None,
    algorithm: Algorithm = Algorithm.ED25519,
    say: Say = print,
) -> dict[str, Any]:
    """Build a backlog on ``backend`` (SQLite files in a temporary folder unless ``urls`` is
    given), settle it, check it settled exactly once, and return the figures."""
    with tempfile.TemporaryDirectory(prefix="offpay-bench-") as folder:
        if urls is None:
            urls = sqlite_urls(Path(folder))
        try:
            return _run(backend, plan, urls, algorithm, say)
        except Exception as exc:  # a benchmark reports a failed run; it does not hide it
            say(f"  settlement run failed: {exc!r}")
            return {"backend": backend, "payments": plan.payments, "error": repr(exc)}


@dataclass
class _Clock:
    """What the settlement alone cost, summed over the waves (making payments is not timed)."""

    settle_s: float = 0.0
    cpu_s: float = 0.0
    settled: int = 0
    slices: list[tuple[int, float]] = field(default_factory=list)  # (settled, seconds) so far
    rss_before: int = 0
    rss_max: int = 0
    held: int = 0  # bytes of sealed records the terminals held before they synchronised
    statements: int = 0
    commits: int = 0
    checkouts: int = 0
    signs: int = 0
    verifies: int = 0
    messages: int = 0
    waves: list[dict[str, Any]] = field(default_factory=list)


def _settle_wave(net: OfflineNetwork, merchants: list[Merchant], clock: _Clock) -> None:
    """Every terminal of the wave synchronises; the engines settle what it uploads."""
    engines = [net.central.db, *(b.db for b in net.banks.values())]
    clock.held += sum(len(r) for m in merchants for r in m.pos.records)
    rss = rss_bytes()
    clock.rss_before = clock.rss_before or rss
    clock.rss_max = max(clock.rss_max, rss)
    messages_before = net.network.messages
    workers_before = _workers_cpu(net)
    settled_before, seconds_before = clock.settled, clock.settle_s
    with count_crypto() as crypto, count_sql(engines) as sql:
        cpu_start = time.process_time()
        for merchant in merchants:
            waiting = merchant.module.state.offline_payments
            start = time.perf_counter()
            merchant.pos.sync()
            clock.settle_s += time.perf_counter() - start
            clock.settled += waiting
            clock.slices.append((clock.settled, clock.settle_s))
            clock.rss_max = max(clock.rss_max, rss_bytes())
        cpu_s = time.process_time() - cpu_start
        clock.cpu_s += cpu_s
    done = clock.settled - settled_before
    clock.waves.append(
        {
            "settled_before": settled_before,
            "payments": done,
            "settle_s": round(clock.settle_s - seconds_before, 3),
            "cpu_us_per_payment": round(1e6 * cpu_s / max(1, done), 1),
            # workers started in this wave count from zero: their start-up is in it
            "workers_cpu_us_per_payment": round(
                1e6 * (_workers_cpu(net) - workers_before) / max(1, done), 1
            ),
            "load_average": round(os.getloadavg()[0], 2),
        }
    )
    clock.messages += net.network.messages - messages_before
    clock.statements += sql.statements
    clock.commits += sql.commits
    clock.checkouts += sql.checkouts
    clock.signs += crypto.total_signs
    clock.verifies += crypto.total_verifies


def _run(
    backend: str,
    plan: BacklogPlan,
    urls: Mapping[str, str],
    algorithm: Algorithm,
    say: Say,
) -> dict[str, Any]:
    waves = math.ceil(plan.payments / plan.wave)
    say(
        f"settlement on {backend}: a backlog of {plan.payments:,} offline payments, made and "
        f"settled in {waves:,} wave{'s' if waves > 1 else ''} of up to {plan.wave:,}"
    )
    setup_start = time.perf_counter()
    net = open_network(urls, plan, algorithm)
    clock = _Clock()
    made = 0.0
    sample: list[User] = []  # payer cards that upload their payments again at the end
    load_before = os.getloadavg()[0]
    children_start = _children_cpu()
    cards = terminals = 0
    for wave in range(waves):
        count = min(plan.wave, plan.payments - wave * plan.wave)
        users, merchants, seconds = make_wave(net, plan, wave, count, say if wave == 0 else _quiet)
        made += seconds
        cards += len(users)
        terminals += len(merchants)
        if wave == 0:
            step = max(1, len(users) // plan.resync_cards) if plan.resync_cards else 1
            sample = users[::step][: plan.resync_cards]
            say(f"settlement on {backend}: {len(merchants):,} terminals synchronise")
        before = (clock.settled, clock.settle_s)
        _settle_wave(net, merchants, clock)
        done, spent = clock.settled - before[0], clock.settle_s - before[1]
        share = 100 * clock.settled / plan.payments
        say(
            f"  wave {wave + 1:,}/{waves:,}: {count:,} payments made in {seconds:,.1f} s, "
            f"settled in {spent:,.1f} s ({done / max(spent, 1e-9):,.0f}/s); "
            f"{clock.settled:,} settled in all ({share:.0f} %), "
            f"{clock.settle_s:,.0f} s of settlement, RSS {rss_bytes() / 2**20:,.0f} MiB"
        )
        for user in users:  # the devices of a settled wave are not needed again: free them
            if user not in sample:
                del net.users[user.name]
    load_after = os.getloadavg()[0]
    setup_s = time.perf_counter() - setup_start - clock.settle_s

    # Exactly once: payer cards upload the same payments again; nothing may settle twice.
    again = sum(u.card.state.offline_transactions for u in sample)
    say(f"settlement on {backend}: {len(sample)} payer cards upload {again:,} payments again")
    resync = _Progress(say, "payments uploaded again", again)
    start, done = time.perf_counter(), 0
    for user in sample:
        done += user.card.state.offline_transactions
        user.phone.sync(user.pin)
        resync.tick(done)
    resync_s = time.perf_counter() - start
    checks = _check(net, plan)
    settle_s, cpu_s = clock.settle_s, clock.cpu_s
    say(
        f"settlement on {backend}: {plan.payments:,} payments in {settle_s:,.1f} s "
        f"({plan.payments / settle_s:,.0f}/s); exactly once: {'yes' if checks['ok'] else 'NO'}"
    )
    first, last = _edge_cost(clock.slices)
    n = plan.payments
    for engine in [net.central.db, *(b.db for b in net.banks.values())]:
        engine.dispose()
    for bank in net.banks.values():
        bank.verifier.close()  # its workers' CPU time counts once they have exited
    workers_cpu_s = _children_cpu() - children_start
    return {
        "backend": backend,
        "algorithm": algorithm.value,
        "payments": n,
        "waves": waves,
        "cards": cards,
        "terminals": terminals,
        "cross_bank_share": round(_cross_share(plan), 3),
        "setup_s": round(setup_s, 2),
        "make_payments_s": round(made, 2),
        "settle_s": round(settle_s, 3),
        "payments_per_s": round(n / settle_s, 1),
        "us_per_payment": round(1e6 * settle_s / n, 1),
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_payment": round(1e6 * cpu_s / n, 1),
        "payments_per_cpu_s": round(n / cpu_s, 1) if cpu_s > 0 else None,
        # verification workers (bank.verifier), from the settlement to the end of the run,
        # the re-upload and the workers' start-up included; 0 when none ran
        "workers_cpu_s": round(workers_cpu_s, 3),
        "workers_cpu_us_per_payment": round(1e6 * workers_cpu_s / n, 1),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "us_per_payment_first_tenth": round(first, 1),
        "us_per_payment_last_tenth": round(last, 1),
        "resync_payments": again,
        "resync_payments_per_s": round(again / resync_s, 1) if resync_s > 0 else None,
        "backlog_bytes_held": clock.held,
        "rss_before_settle_mib": round(clock.rss_before / 2**20, 1),
        "rss_growth_settle_mib": round((clock.rss_max - clock.rss_before) / 2**20, 1),
        "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1),
        "per_payment": {
            "signatures_verified": round(clock.verifies / n, 2),
            "signatures_made": round(clock.signs / n, 2),
            "sql_statements": round(clock.statements / n, 2),
            "commits": round(clock.commits / n, 2),
            "connection_checkouts": round(clock.checkouts / n, 2),
            "messages": round(clock.messages / n, 2),
        },
        "checks": checks,
        "waves_detail": clock.waves,
    }


def _quiet(_text: str) -> None:
    """Progress of the waves after the first: one line per wave is enough."""


def _cross_share(plan: BacklogPlan) -> float:
    crossing = 0
    for first in range(0, plan.payments, plan.wave):
        part = dataclasses.replace(plan, payments=min(plan.wave, plan.payments - first))
        crossing += sum((p // part.cards) % 2 for p in range(part.payments))
    return crossing / max(1, plan.payments)


def _edge_cost(slices: list[tuple[int, float]]) -> tuple[float, float]:
    """Microseconds per payment over the first and the last tenth of the settlement."""
    if not slices:
        return 0.0, 0.0
    total = slices[-1][0]
    tenth = max(1, total // 10)
    head = next((s for s in slices if s[0] >= tenth), slices[-1])
    tail_start = next((s for s in reversed(slices) if s[0] <= total - tenth), (0, 0.0))
    tail_n = total - tail_start[0]
    tail_t = slices[-1][1] - tail_start[1]
    return 1e6 * head[1] / max(1, head[0]), 1e6 * tail_t / max(1, tail_n)


def _check(net: OfflineNetwork, plan: BacklogPlan) -> dict[str, Any]:
    """Each payment notarised, debited and credited exactly once, and money conserved."""
    n, amount = plan.payments, plan.amount_minor
    notarised = net.central.notarised_count()
    debited = sum((b.settled_totals()[0].minor for b in net.banks.values()), 0)
    credited = sum((b.settled_totals()[1].minor for b in net.banks.values()), 0)
    merchants = sum(m.wallet.minor for m in net.merchants.values())
    try:
        net.check_conservation()
        conserved = True
    except OffpayError:
        conserved = False
    ok = (
        notarised == n
        and debited == credited == merchants == n * amount
        and conserved
        and not any(b.open_shortfalls() for b in net.banks.values())
    )
    return {
        "ok": ok,
        "notarised": notarised,
        "debited_minor": debited,
        "credited_minor": credited,
        "merchants_minor": merchants,
        "conserved": conserved,
    }
