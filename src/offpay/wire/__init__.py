"""What crosses a hop: message types, their canonical encoding, and signed envelopes."""
