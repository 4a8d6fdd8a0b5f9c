"""Benchmarks of offpay measured against the machine's own ceilings (issue 7).

Run ``offpay bench`` (or ``python -m offpay.bench``): signature and database ceilings, backlog
settlement on SQLite and PostgreSQL, offline payment cost, device storage and token
verification, printed as a table and written to a JSON file and to BENCHMARKS.md.
"""
