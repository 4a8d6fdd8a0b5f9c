"""Secure devices as sans-IO state machines: the card applet and the terminal's module."""
