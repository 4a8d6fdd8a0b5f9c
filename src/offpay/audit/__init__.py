"""The independent auditor (issue 18): a separate process that reads every party's database
through a read-only connection, re-verifies the settled payments' evidence with the protocol's
own code and names the party and the records behind each discrepancy (docs/audit.md)."""
