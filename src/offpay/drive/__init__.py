"""Driving a network from the command line: people, shops and their devices kept in the
network's data folder between commands (``offpay customer``, ``offpay pay``, ``offpay play``)."""
