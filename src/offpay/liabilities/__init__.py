"""Proof of liabilities (issue 18, point 4): per period, each intermediary publishes a signed
commitment to a Merkle sum tree over its customers' wallets whose total equals its holdings at
the central bank; a customer's phone verifies its own leaf's inclusion (docs/audit.md)."""
