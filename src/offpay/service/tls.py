"""TLS 1.3 for the served network: the services' server contexts (mutual TLS between
services), and the one client every caller uses (:func:`network_client`), which trusts the
network's own TLS CA and nothing from the system's trust store.

A service reads its key, certificate, the trusted CAs and the revocation list from files
(:mod:`offpay.service.tls_pki`) and reads them again when any of them changes: every new
connection gets the files' current content (:class:`ReloadingServerTls`), the connections
already open keep theirs. So an operator rotates a certificate, or the central bank adds a
revoked party to the CRL, without restarting anything.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from offpay.errors import OffpayError
from offpay.service.datadir import CENTRAL, NetworkConfig
from offpay.service.tls_pki import (
    CA_FILE,
    CRL_FILE,
    TlsSetupError,
    party_files,
    tls_folder,
    trusted_tls_cas,
)

log = logging.getLogger("offpay.service")

MINIMUM = ssl.TLSVersion.TLSv1_3


class TlsRefused(OffpayError):
    """A service whose certificate this network's TLS CA did not issue (a look-alike), that
    has expired or been revoked, or a service that refused our own certificate."""

    code = "tls.untrusted"


def is_tls(url: str) -> bool:
    return url.lower().startswith("https://")


@dataclass(frozen=True)
class TlsFiles:
    """Where one party's TLS material is, and the root its trusted CAs must chain to."""

    network_folder: Path
    root_der: bytes
    key: Path
    chain: Path

    @classmethod
    def of(cls, network: NetworkConfig, name: str) -> TlsFiles:
        key, chain = party_files(network.folder, name)
        return cls(network.folder, network.root_der, key, chain)

    @property
    def cas(self) -> Path:
        return tls_folder(self.network_folder) / CA_FILE

    @property
    def crl(self) -> Path:
        return tls_folder(self.network_folder) / CRL_FILE

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """Changes whenever one of the files is replaced or rewritten."""
        stamps = []
        for path in (self.key, self.chain, self.cas, self.crl):
            try:
                st = path.stat()
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)


def _trust(context: ssl.SSLContext, files: TlsFiles) -> None:
    """The network's TLS CAs (checked against the root), and its CRL when there is one."""
    cas = trusted_tls_cas(files.network_folder, files.root_der)
    context.load_verify_locations(cadata=cas.decode())
    # The TLS CA is an intermediate (the network root above it is not a TLS anchor).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if files.crl.exists():
        try:
            context.load_verify_locations(cafile=str(files.crl))
        except (ssl.SSLError, OSError) as exc:
            raise TlsSetupError(f"{files.crl} cannot be read: {exc}") from None
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _own_certificate(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        context.load_cert_chain(str(files.chain), str(files.key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(
            f"cannot load the TLS certificate {files.chain} with its key {files.key}: {exc}"
        ) from None


def server_context(files: TlsFiles, *, require_client: bool) -> ssl.SSLContext:
    """TLS 1.3 only. ``require_client``: only a client with a certificate of the network
    (not revoked) is served; otherwise a client may come without one (a phone), but one that
    shows a certificate must show a good one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM
    _own_certificate(context, files)
    _trust(context, files)
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return context


class ReloadingServerTls:
    """A server context that hands every new connection the current files: at each handshake
    (the SNI callback, which OpenSSL calls whether or not the client names a server) the files
    are looked at, rebuilt into a new context if changed, and the connection switched to it.
    Files that fail to load are logged and the last good context stays in use."""

    def __init__(self, files: TlsFiles, *, require_client: bool) -> None:
        self.files = files
        self.require_client = require_client
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        self._current = self._build()
        self.context = self._build()  # the one the listening socket holds

    def _build(self) -> ssl.SSLContext:
        context = server_context(self.files, require_client=self.require_client)
        context.sni_callback = self._switch
        return context

    def current(self) -> ssl.SSLContext:
        stamp = self.files.stamp()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._current = self._build()
                    log.warning("TLS files changed: new connections use them")
                except OffpayError as exc:
                    log.error("TLS files changed but cannot be used, keeping the old: %s", exc)
            return self._current

    def _switch(self, connection: ssl.SSLObject, _server_name: str | None, _ctx: object) -> None:
        connection.context = self.current()


def client_context(network: NetworkConfig, party: str | None = None) -> ssl.SSLContext:
    """TLS 1.3 only, trusting the network's TLS CAs and nothing else; with ``party``, shows
    that party's certificate (mutual TLS between services, and the central bank's own
    back office)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM
    files = TlsFiles.of(network, party or CENTRAL)
    _trust(context, files)
    if party is not None:
        _own_certificate(context, files)
    return context


def network_client(
    network: NetworkConfig,
    party: str | None = None,
    *,
    timeout: float = 60.0,
    connect_timeout: float = 5.0,
    limits: httpx.Limits | None = None,
) -> httpx.Client:
    """The HTTP client for this network's services, for the CLI, the demo, the console and
    the services themselves: verifies every service against the network's TLS CA; ``party``
    names whose certificate it shows (see :func:`client_context`). Like the services, it reads
    the TLS files again when they change (a rotated certificate, a new CA, a new CRL)."""
    limits = limits or httpx.Limits(max_connections=200, max_keepalive_connections=50)
    uses_tls = any(is_tls(url) for url in network.urls.values())
    transport: httpx.BaseTransport = (
        ReloadingClientTransport(network, party, limits)
        if uses_tls
        else httpx.HTTPTransport(limits=limits)
    )
    # trust_env=False: services talk to each other directly, never through a proxy the
    # environment happens to name.
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        trust_env=False,
    )


class ReloadingClientTransport(httpx.BaseTransport):
    """An HTTPS transport that starts a new connection pool, with the files' current content,
    when the TLS files change; requests already under way finish on the old pool."""

    def __init__(self, network: NetworkConfig, party: str | None, limits: httpx.Limits) -> None:
        self.network = network
        self.party = party
        self.limits = limits
        self.files = TlsFiles.of(network, party or CENTRAL)
        self._lock = threading.Lock()
        self._stamp = self.files.stamp()
        self._current = self._build()
        self._retired: list[httpx.HTTPTransport] = []

    def _build(self) -> httpx.HTTPTransport:
        return httpx.HTTPTransport(
            verify=client_context(self.network, self.party), limits=self.limits
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        stamp = self.files.stamp()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    fresh = self._build()
                except OffpayError as exc:
                    log.error("TLS files changed but cannot be used, keeping the old: %s", exc)
                else:
                    self._retired.append(self._current)
                    self._current = fresh
            transport = self._current
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            for transport in (*self._retired, self._current):
                transport.close()
            self._retired.clear()


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an httpx transport error, if a handshake failed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def refusal_of(what: str, failure: ssl.SSLError) -> TlsRefused:
    """One line a person understands, for a handshake that failed."""
    if isinstance(failure, ssl.SSLCertVerificationError):
        reason = failure.verify_message or str(failure)
        return TlsRefused(
            f"{what}: the service's certificate is not trusted by this network ({reason}); "
            "it is not a service of this network, or its certificate expired or was revoked"
        )
    reason = failure.reason or str(failure)
    return TlsRefused(f"{what}: the TLS handshake failed ({reason.lower().replace('_', ' ')})")
