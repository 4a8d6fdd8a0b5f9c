"""One simulation: a scenario's stream of events through one executor.

``fast`` re-states the protocol's rules over state arrays (millions of people); ``real`` plays
every event on an in-process network of real cards, terminals, crypto and databases (a few
hundred people: the fidelity tests hold ``fast`` to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from offpay.sim.population.events import Events, World, generate
from offpay.sim.population.outcomes import Results
from offpay.sim.population.scenario import Scenario, Scheme

Progress = Callable[[int], None]  # told how many events are done


class Executor(StrEnum):
    FAST = "fast"
    REAL = "real"


@dataclass(frozen=True, eq=False)
class Run:
    scenario: Scenario
    world: World
    events: Events
    results: Results


def execute(
    scenario: Scenario,
    world: World,
    events: Events,
    executor: Executor = Executor.FAST,
    progress: Progress | None = None,
) -> Results:
    """The results of ``events`` under the scenario's scheme, from the chosen executor."""
    tokens = scenario.scheme is Scheme.TOKENS
    if executor is Executor.FAST:
        if tokens:
            from offpay.sim.population.tokens_fast import run_fast_tokens

            return run_fast_tokens(scenario, world, events, progress)
        from offpay.sim.population.fast import run_fast

        return run_fast(scenario, world, events, progress)
    if tokens:
        from offpay.sim.population.tokens_real import run_real_tokens

        return run_real_tokens(scenario, world, events)
    from offpay.sim.population.real import run_real

    return run_real(scenario, world, events)


def simulate(
    scenario: Scenario, executor: Executor = Executor.FAST, progress: Progress | None = None
) -> Run:
    world, events = generate(scenario)
    return Run(scenario, world, events, execute(scenario, world, events, executor, progress))
