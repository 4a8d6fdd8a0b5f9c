"""The central bank: issuance, reserve accounts, the notary, and the root of trust."""
