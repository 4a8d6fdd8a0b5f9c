"""Keys, certificates and sealing: every primitive comes from ``cryptography``."""
