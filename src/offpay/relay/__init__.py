"""Untrusted relays: the phone app and the PoS app only carry messages between devices and
the intermediary. Nothing they do can move money that a device or the engine did not sign."""
