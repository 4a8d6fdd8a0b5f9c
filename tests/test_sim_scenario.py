"""Scenarios are refused field by field, and one scenario and seed give one stream of events."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offpay.sim.population.events import Kind, Tag, generate
from offpay.sim.population.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
)

BASE: dict[str, Any] = {
    "name": "small",
    "seed": 3,
    "days": 2,
    "population": {
        "people": 300,
        "merchants": 20,
        "intermediaries": [{"name": "bank-a", "share": 0.7}, {"name": "bank-b", "share": 0.3}],
        "regions": [{"name": "north", "share": 0.4}, {"name": "south", "share": 0.6}],
    },
    "behaviour": {"payments_per_person_per_day": 2, "person_to_person_share": 0.3},
    "outage": {"start_hour": 20, "hours": 12, "intermediaries": ["bank-a"]},
    "attacks": {"cloned_cards": 0.01, "rolled_back_cards": 0.01, "payments": 2},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("days", 0, "days"),
        ("days", "two", "days"),
        ("name", "", "name"),
        ("seed", -1, "seed"),
        ("currency", "sek", "currency"),
        ("scheme", "cash", "scheme"),
        ("population.people", 0, "population.people"),
        ("population.merchants", -2, "population.merchants"),
        ("population.intermediaries", [{"name": "a", "share": 0.5}], "population.intermediaries"),
        ("population.regions", [], "population.regions"),
        ("population.names", ["A", "A"], "population"),
        ("behaviour.payments_per_person_per_day", -1, "behaviour.payments_per_person_per_day"),
        ("behaviour.person_to_person_share", 1.5, "behaviour.person_to_person_share"),
        ("behaviour.amount", {"median": "SEK 1.234"}, "behaviour.amount.median"),
        ("behaviour.amount", {"median": "EUR 10"}, "behaviour.amount.median"),
        ("behaviour.amount", {"median": 500, "max": 100}, "behaviour.amount"),
        ("behaviour.active_hours", [22, 8], "behaviour.active_hours"),
        ("behaviour.top_up_to", "lots", "behaviour.top_up_to"),
        ("outage.hours", 0, "outage.hours"),
        ("outage.intermediaries", ["bank-z"], "outage.intermediaries"),
        ("outage.regions", ["west"], "outage.regions"),
        ("outage.start_hour", 48, "outage.start_hour"),
        ("limits.card_max_offline_transactions", -1, "limits.card_max_offline_transactions"),
        ("limits.card_max_balance", "SEK -5", "limits.card_max_balance"),
        ("limits.max_receipts", 65, "limits"),
        ("limits.payment_max", "SEK -1", "limits.payment_max"),
        ("limits.max_offline_hours", -1, "limits.max_offline_hours"),
        ("limits.card_max_daily_payments", -1, "limits.card_max_daily_payments"),
        ("limits.card_max_daily_spent", "SEK -1", "limits.card_max_daily_spent"),
        ("limits.token_max_ancestry", 8, "limits"),  # a token limit, balance scheme
        ("limits.element_max_holding", "SEK 3000", "limits"),  # a token limit, balance scheme
        ("liquidity.policy", "borrow", "liquidity.policy"),
        ("liquidity", {"policy": "pool"}, "liquidity.pool"),
        ("attacks.cloned_cards", 2, "attacks.cloned_cards"),
        ("attacks.broken_elements", 0.1, "attacks.broken_elements"),
        ("attacks.cloned_cards", 1, "attacks"),  # with 0.01 rolled back: more than everyone
        ("scheme", "tokens", "attacks"),  # the base's cloned cards are not a token attack
        ("attacks.amount", "most", "attacks.amount"),
        ("script", [{"at_hour": 1, "kind": "shop", "who": "0"}], "script.[0]"),
        ("script", [{"at_hour": 99, "kind": "online", "who": "0"}], "script"),
        ("surprise", 1, "surprise"),
    ],
)
def test_each_bad_field_is_refused_by_name(path: str, value: Any, named: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(with_(path, value))
    message = caught.value.message
    assert caught.value.code == "scenario.invalid"
    assert message.startswith(named), message
    assert "\n" not in message


def test_amounts_are_read_as_money_or_minor_units() -> None:
    s = parse_scenario(with_("limits", {"card_max_balance": "SEK 500", "terminal_max_received": 1}))
    assert s.policy.card_max_balance.minor == 500_00
    assert s.policy.terminal_max_received.minor == 1
    assert s.policy.card_max_offline_transactions == 5  # the report's default stays


def test_the_modelled_new_limits_become_the_policy_and_the_others_are_named() -> None:
    s = parse_scenario(
        with_("limits", {"payment_max": "SEK 200", "card_max_offline_spent": 2000_00})
    )
    assert s.policy.payment_max is not None and s.policy.payment_max.minor == 200_00
    assert s.policy.card_max_offline_spent is not None
    assert s.policy.card_max_offline_spent.minor == 2000_00
    assert s.policy.max_offline_hours is None  # left out: no limit
    s = parse_scenario(
        with_(
            "limits",
            {"max_offline_hours": 72, "card_max_daily_payments": 20, "card_max_daily_spent": 1},
        )
    )
    assert s.policy.max_offline_hours == 72 and s.policy.card_max_daily_payments == 20
    assert s.policy.card_max_daily_spent is not None and s.policy.card_max_daily_spent.minor == 1
    # the token elements' limits mean nothing to the balance scheme's cards: refused by name
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(with_("limits", {"token_max_ancestry": 8, "element_max_holding": 1}))
    assert "element_max_holding, token_max_ancestry" in caught.value.message


def test_a_file_that_is_not_toml_or_not_there_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [", encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(bad)
    assert caught.value.code == "scenario.not_toml"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "missing.toml")
    assert caught.value.code == "scenario.unreadable"


def test_the_same_seed_gives_the_same_stream_and_another_seed_another() -> None:
    s = parse_scenario(BASE)
    (w1, e1), (w2, e2) = generate(s), generate(s)
    for field in ("t", "kind", "a", "b", "amount", "cut", "tag"):
        assert np.array_equal(getattr(e1, field), getattr(e2, field))
    assert np.array_equal(w1.person_bank, w2.person_bank)
    _, e3 = generate(parse_scenario(with_("seed", 4)))
    assert len(e3) != len(e1) or not np.array_equal(e3.amount, e1.amount)


def test_the_stream_keeps_the_scenarios_rules() -> None:
    s = parse_scenario(BASE)
    world, e = generate(s)
    assert np.all(np.diff(e.t) >= 0) and e.t.min() >= 0 and e.t.max() < s.minutes
    assert (np.bincount(world.person_bank) == [210, 90]).all()  # shares, exactly rounded
    shop, p2p = e.kind == Kind.SHOP, e.kind == Kind.P2P
    assert np.all(e.b[shop] < 20) and np.all(e.b[p2p] != e.a[p2p])
    pays = shop | p2p
    amount = s.behaviour.amount
    assert np.all((e.amount[pays] >= amount.min) & (e.amount[pays] <= amount.max))
    assert np.all(e.amount[pays] % 100 == 0)  # whole kronor
    # Going online is cut only during the outage and only for bank-a's devices.
    cut = np.flatnonzero(e.cut)
    assert len(cut) and np.all((e.t[cut] >= 20 * 60) & (e.t[cut] < 32 * 60))
    people = e.kind[cut] == Kind.ONLINE
    assert np.all(world.person_bank[e.a[cut][people]] == 0)
    # Every device cut off tries again after the outage.
    retries = e.tag == Tag.RECONNECT
    assert np.all(e.t[retries] >= 32 * 60)
    cut_people = set(e.a[cut][people].tolist())
    assert cut_people <= set(e.a[retries & (e.kind == Kind.ONLINE)].tolist())
    # Three broken cards of each kind; a rolled-back card is written back before it spends.
    assert len(world.cloned) == len(world.rolled_back) == 3
    assert not set(world.cloned.tolist()) & set(world.rolled_back.tolist())
    for person in world.rolled_back:
        rollback = e.t[(e.kind == Kind.ROLLBACK) & (e.a == person)]
        spends = e.t[(e.kind == Kind.ROLLED_SHOP) & (e.a == person)]
        assert len(rollback) == 1 and len(spends) == 2 and rollback[0] < spends.min()


def test_a_script_names_people_and_merchants() -> None:
    data = {
        "name": "abc",
        "days": 1,
        "generate": False,
        "population": {"people": 3, "merchants": 1, "names": ["Alice", "Bob", "Charlie"]},
        "script": [
            {"at_hour": 1, "kind": "p2p", "who": "Alice", "to": "Bob", "amount": "SEK 100"},
            {"at_hour": 2, "kind": "shop", "who": "Bob", "to": "m0", "amount": 5000},
            {"at_hour": 3, "kind": "shop-online", "who": "m0"},
        ],
    }
    _, e = generate(parse_scenario(data))
    assert e.kind.tolist() == [Kind.P2P, Kind.SHOP, Kind.SHOP_ONLINE]
    assert e.a.tolist() == [0, 1, 0] and e.b.tolist() == [1, 0, -1]
    assert e.amount.tolist() == [100_00, 50_00, 0]
    data["script"][1]["to"] = "m7"
    with pytest.raises(ScenarioError, match="no merchant 'm7'"):
        generate(parse_scenario(data))


@given(
    people=st.integers(1, 60),
    merchants=st.integers(0, 5),
    rate=st.floats(0, 4),
    share=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_any_valid_population_draws_a_well_formed_stream(
    people: int, merchants: int, rate: float, share: float, seed: int
) -> None:
    s = parse_scenario(
        {
            "name": "any",
            "seed": seed,
            "days": 1,
            "population": {"people": people, "merchants": merchants},
            "behaviour": {"payments_per_person_per_day": rate, "person_to_person_share": share},
        }
    )
    world, e = generate(s)
    assert np.all(np.diff(e.t) >= 0)
    pays = np.isin(e.kind, [Kind.SHOP, Kind.P2P])
    assert np.all(e.amount[pays] > 0)
    assert np.all((e.a >= 0) & (e.a < np.where(e.kind == Kind.SHOP_ONLINE, merchants, people)))
    assert np.all(e.b[e.kind == Kind.SHOP] < max(merchants, 1))
    assert np.all(e.b[e.kind == Kind.P2P] != e.a[e.kind == Kind.P2P])
    assert world.people == people


def test_a_holding_limit_below_the_top_up_is_refused_in_the_token_scheme() -> None:
    """Every withdrawal would take the element above its limit: refused, not run."""
    data = copy.deepcopy(BASE)
    data.update(scheme="tokens", attacks={})
    data["behaviour"] = {**data.get("behaviour", {}), "top_up_to": "SEK 500"}
    data["limits"] = {"element_max_holding": "SEK 400", "token_max_ancestry": 6}
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data)
    assert caught.value.message.startswith("limits.element_max_holding: below")
    data["limits"]["element_max_holding"] = "SEK 500"
    s = parse_scenario(data)
    assert s.policy.element_max_holding is not None
    assert s.policy.element_max_holding.minor == 500_00 and s.policy.token_max_ancestry == 6
