"""Alembic's entry point for both kinds of offpay database; the work is in
:func:`offpay.store.migrate.run_env`."""

from alembic import context

from offpay.store.migrate import run_env

run_env(context)
