"""The intermediary: wallets, device issuance, synchronisation and settlement."""
