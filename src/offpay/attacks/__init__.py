"""The attack suite of docs/threats.md as code: each attack played against an in-process
network (and, where it can be played over HTTP, against a running one), returning an
immutable :class:`~offpay.attacks.report.AttackReport`. `offpay attack` prints them; the tests
(tests/test_attacks.py, tests/test_token_attacks.py) play the same functions and assert on
the network afterwards."""
