"""The token-based scheme ("sign once", Federal Reserve FEDS 2025-105): minted tokens that
name their owner's key, transferred offline by a signature the secure element can give once."""
