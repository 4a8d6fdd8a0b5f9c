"""The intermediary: wallets, device issuance, synchronisation and settlement.

One payment, in the order the code runs it (docs/architecture.md):
``engine`` (the façade routes the request) -> ``terminal_sync`` / ``card_sync`` (the
device's session) -> ``devices`` (a request from a device we issued) -> ``refusal`` (declines
first) -> ``batch`` (the upload) -> ``verification`` (verify: pure) -> ``plan`` (what to
debit, credit or settle one by one: pure) -> ``ledger`` (the one writer) -> ``settlement``
(the one-by-one path: debit, ``notarisation``, credit, ``interbank``).
"""
