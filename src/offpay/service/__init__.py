"""The parties as network services: the central bank and each intermediary behind HTTP.

The same ``handle(kind, data) -> bytes`` that serves the in-process network serves HTTP: a
route per request kind takes the signed envelope as its body (:mod:`offpay.service.app`), and
:class:`offpay.service.client.HttpNetwork` is the sending side, with the same ``send``. A
network's keys, certificates and addresses live in a data folder
(:mod:`offpay.service.datadir`), so a service restarts from the same database and keys.
"""
