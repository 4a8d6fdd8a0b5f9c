"""``python -m offpay``: the same as the ``offpay`` command."""

from offpay.cli import app

app()
