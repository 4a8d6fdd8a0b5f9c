"""The population simulator: what offline payments cost a whole population.

A scenario file (:mod:`.scenario`) is turned into one stream of events (:mod:`.events`): who
pays whom, how much and when, who goes online when, which devices an attacker breaks. Two
executors take the same stream: a fast one that re-states the protocol's rules over state
arrays, for millions of people, and the real one that feeds every event to an in-process
network of real cards, terminals, crypto and databases. The fidelity tests hold the first to
the second, event by event.
"""
