"""How bytes reach a party: in memory today; HTTP plugs in behind the same interface."""
