"""Whole networks in one process: for the demo, the tests and experiments."""
