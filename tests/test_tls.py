"""Issue 21: the services speak TLS 1.3 only, with certificates of the network's own TLS CA
(certified by the network root); the central bank serves only parties of the network (mutual
TLS), an intermediary's interbank routes too; a revoked party is refused at the handshake; a
client trusts the network's TLS CA only, and a look-alike, an expired certificate or a plain
HTTP client gets nowhere. Certificates are replaced while the services run."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import client_of, serve_party
from offpay.cli import app as cli
from offpay.crypto.pki import load_certificate
from offpay.errors import OffpayError
from offpay.service.app import create_app
from offpay.service.client import AdminClient, HttpNetwork
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.process import serve_in_thread, service_process
from offpay.service.remote import RemoteNetwork, require_services
from offpay.service.serve import build, listening_context
from offpay.service.tls import TlsRefused, client_context
from offpay.service.tls_pki import (
    TlsSetupError,
    issue_party,
    issued,
    load_authority,
    party_files,
    read_crls,
    tls_folder,
    write_crl,
)

WAIT_S = 60.0  # a guard against a hang, not a measurement


@contextlib.contextmanager
def served(network: NetworkConfig, names: tuple[str, ...] | None = None) -> Iterator[None]:
    """Every party of ``network`` (or ``names``) served in threads over TLS, with their
    background work (the central bank keeps the CRL current)."""
    with contextlib.ExitStack() as stack:
        for name in names or tuple(network.urls):
            built = build(network, name, retry_every=-1)
            stack.callback(built.service.party.db.dispose)
            application = create_app(built.service, background=built.background)
            stack.enter_context(serve_party(network, name, application))
        yield


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    config = init_network(tmp_path_factory.mktemp("tls"), ("bank-a", "bank-b"))
    with served(config):
        yield config


def health(network: NetworkConfig, name: str, party: str | None) -> int:
    with client_of(network, party) as http:
        return http.get(f"{network.urls[name]}/v1/health").status_code


def handshake(url: str, context: ssl.SSLContext) -> ssl.SSLSocket:
    address = urlsplit(url)
    raw = socket.create_connection((address.hostname, address.port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=address.hostname)
    except BaseException:
        raw.close()
        raise


def served_serial(url: str, network: NetworkConfig) -> int:
    with handshake(url, client_context(network)) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return load_certificate(der).serial_number


def eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def refused_connection(network: NetworkConfig, name: str, party: str | None) -> bool:
    try:
        health(network, name, party)
    except httpx.TransportError:
        return True
    return False


# ---- what `network init` issues ----------------------------------------------------------------


def test_init_issues_every_service_a_certificate_under_the_network_root(
    network: NetworkConfig,
) -> None:
    root = load_certificate(network.root_der)
    [tls_ca] = x509.load_pem_x509_certificates((tls_folder(network.folder) / "ca.pem").read_bytes())
    tls_ca.verify_directly_issued_by(root)  # the TLS CA chains to the network root
    constraints = tls_ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert (network.folder / CENTRAL / "tls-ca.key").stat().st_mode & 0o077 == 0
    for name, url in network.urls.items():
        key, chain = party_files(network.folder, name)
        assert key.stat().st_mode & 0o077 == 0, "a TLS key readable by others"
        leaf, ca = x509.load_pem_x509_certificates(chain.read_bytes())
        assert ca == tls_ca
        leaf.verify_directly_issued_by(tls_ca)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert urlsplit(url).hostname in [
            str(ip) for ip in names.get_values_for_type(x509.IPAddress)
        ]
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
        assert url.startswith("https://")


def test_a_tls_ca_the_root_did_not_certify_is_not_trusted(
    network: NetworkConfig, tmp_path: Path
) -> None:
    """Whoever can write ``tls/ca.pem`` cannot slip in a CA of their own: clients check that
    the network root signed every CA in it."""
    other = init_network(tmp_path / "other", ("bank-a",))
    victim = init_network(tmp_path / "victim", ("bank-a",))
    cas = tls_folder(victim.folder) / "ca.pem"
    cas.write_bytes(cas.read_bytes() + (tls_folder(other.folder) / "ca.pem").read_bytes())
    with pytest.raises(TlsSetupError) as refused:
        client_context(victim)
    assert refused.value.code == "tls.setup"
    assert "the network root did not sign" in refused.value.message


# ---- TLS 1.3 only, no plain text ---------------------------------------------------------------


@pytest.mark.parametrize("name", [CENTRAL, "bank-a"])
def test_services_speak_tls_1_3_and_nothing_older(network: NetworkConfig, name: str) -> None:
    party = "bank-b"
    with handshake(network.urls[name], client_context(network, party)) as conn:
        assert conn.version() == "TLSv1.3"
    old = client_context(network, party)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(network.urls[name], old).close()


@pytest.mark.parametrize("name", [CENTRAL, "bank-a"])
def test_a_plaintext_client_gets_no_answer(network: NetworkConfig, name: str) -> None:
    address = urlsplit(network.urls[name])
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    assert not answer.startswith(b"HTTP/"), answer
    with httpx.Client(trust_env=False, timeout=10) as http, pytest.raises(httpx.TransportError):
        http.get(f"http://{address.netloc}/v1/health")


# ---- mutual TLS between services ---------------------------------------------------------------


def test_the_central_bank_serves_only_parties_of_the_network(network: NetworkConfig) -> None:
    assert health(network, CENTRAL, "bank-a") == 200
    assert health(network, CENTRAL, CENTRAL) == 200  # its own back office
    assert refused_connection(network, CENTRAL, None)  # no certificate: no connection
    # An intermediary serves phones, which show no certificate.
    assert health(network, "bank-a", None) == 200


def test_an_intermediarys_interbank_routes_need_a_partys_certificate(
    network: NetworkConfig,
) -> None:
    url = f"{network.urls['bank-a']}/v1/messages"
    headers = {"Content-Type": "application/cbor", "Idempotency-Key": "k-tls-1"}
    with client_of(network) as phone:
        refused = phone.post(f"{url}/debit-request", content=b"\xa0", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "auth.client_certificate_required"
        # A phone's own route is open to it (and refuses the junk body for what it is).
        own = phone.post(f"{url}/card-session", content=b"\xa0", headers=headers)
        assert own.json()["code"] != "auth.client_certificate_required"
    with client_of(network, "bank-b") as bank:
        answer = bank.post(f"{url}/debit-request", content=b"\xa0", headers=headers)
        assert answer.json()["code"] != "auth.client_certificate_required"


def test_payments_flow_over_mutual_tls(network: NetworkConfig) -> None:
    """The whole path: phones to their intermediary, intermediaries to each other and to the
    central bank, all over TLS; the books balance."""
    remote = RemoteNetwork(network, retries=1)
    try:
        for bank in network.banks:
            remote.issue(bank, 10_000_00)
        alice = remote.add_user("Alice", "bank-a", online=500_00)
        bob = remote.add_user("Bob", "bank-b")
        alice.phone.top_up(alice.pin, remote.money(200_00))
        request = bob.phone.ask(alice.phone.show_identity(), remote.money(50_00))
        bob.phone.accept(bob.pin, alice.phone.pay(alice.pin, request))
        alice.phone.sync(alice.pin)
        bob.phone.sync(bob.pin)
        assert bob.shadow == remote.money(50_00)
        remote.check_conservation()
    finally:
        remote.close()


# ---- clients trust the network's TLS CA only ----------------------------------------------------


@pytest.fixture
def look_alike(tmp_path: Path) -> Iterator[str]:
    """A service of another network on this machine: a certificate for the same address,
    from a TLS CA this network never certified."""
    other = init_network(tmp_path / "look-alike", ("bank-a",))
    built = build(other, "bank-a", retry_every=-1)
    try:
        url = other.urls["bank-a"]
        with serve_in_thread(
            create_app(built.service), url, tls=listening_context(other, "bank-a")
        ):
            yield url
    finally:
        built.service.party.db.dispose()


def test_a_look_alike_service_is_refused_with_a_clear_error(
    network: NetworkConfig, look_alike: str
) -> None:
    fake = dataclasses.replace(network, urls={**network.urls, "bank-a": look_alike})
    transport = HttpNetwork(fake.urls, retries=3, backoff=0, client=client_of(fake))
    try:
        with pytest.raises(TlsRefused) as refused:
            transport.send("bank-a", "card-session", b"\xa0")
    finally:
        transport.close()
    assert refused.value.code == "tls.untrusted"
    assert "not trusted by this network" in refused.value.message
    assert "\n" not in refused.value.message
    with pytest.raises(TlsRefused):
        require_services(fake)
    # The system's trust store is not consulted, and does not trust the network either.
    with httpx.Client(trust_env=False, timeout=10) as http, pytest.raises(httpx.ConnectError):
        http.get(f"{network.urls['bank-a']}/v1/health")


def test_the_cli_refuses_a_look_alike_in_one_line_with_exit_2(
    tmp_path: Path, look_alike: str
) -> None:
    victim = init_network(tmp_path / "victim", ("bank-a", "bank-b"))
    settings = json.loads((victim.folder / "network.json").read_text())
    settings["urls"][CENTRAL] = look_alike
    (victim.folder / "network.json").write_text(json.dumps(settings))
    result = CliRunner().invoke(cli, ["demo", "--network", str(victim.folder)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not trusted by this network" in lines[0], result.output
    assert "Traceback" not in result.output


def test_an_expired_certificate_is_refused_both_ways(tmp_path: Path) -> None:
    network = init_network(tmp_path / "expired", ("bank-a",))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    issue_party(
        network.folder,
        CENTRAL,
        load_authority(network.folder, CENTRAL),
        "bank-a",
        ["127.0.0.1"],
        long_ago,
        days=1,
    )
    with served(network):
        admin = AdminClient(
            network.urls["bank-a"],
            network.admin_token("bank-a"),
            retries=2,
            backoff=0,
            client=client_of(network),
        )
        try:
            with pytest.raises(TlsRefused) as refused:
                admin.get("/v1/admin/ledger")
        finally:
            admin.close()
        assert "expired" in refused.value.message
        # bank-a's expired certificate opens no connection at the central bank either.
        assert refused_connection(network, CENTRAL, "bank-a")
        assert health(network, CENTRAL, CENTRAL) == 200


def test_a_revoked_party_is_refused_at_the_handshake(tmp_path: Path) -> None:
    """The central bank revokes bank-b: its TLS CA writes a new CRL, and from then on the
    central bank and bank-a refuse bank-b's certificate; bank-a is served as before."""
    network = init_network(tmp_path / "revoked", ("bank-a", "bank-b"))
    with served(network):
        remote = RemoteNetwork(network, retries=1)
        try:
            assert health(network, CENTRAL, "bank-b") == 200
            remote.central.revoke("bank-b", "a party caught cheating")
            assert eventually(lambda: refused_connection(network, CENTRAL, "bank-b"))
            assert refused_connection(network, "bank-a", "bank-b")
            assert health(network, CENTRAL, "bank-a") == 200
            assert health(network, "bank-a", None) == 200
        finally:
            remote.close()
    crl = x509.load_pem_x509_crl((tls_folder(network.folder) / "crl.pem").read_bytes())
    leaf = x509.load_pem_x509_certificates(party_files(network.folder, "bank-b")[1].read_bytes())[0]
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert len(list(crl)) == 1


# ---- certificates replaced while the services run ----------------------------------------------


def test_a_rotated_certificate_is_served_without_a_restart(network: NetworkConfig) -> None:
    url = network.urls["bank-a"]
    before = served_serial(url, network)
    with client_of(network) as kept:
        assert kept.get(f"{url}/v1/health").status_code == 200  # a connection kept open
        new = issue_party(
            network.folder,
            CENTRAL,
            load_authority(network.folder, CENTRAL),
            "bank-a",
            ["127.0.0.1"],
            dt.datetime.now(dt.UTC),
        )
        assert new.serial_number != before
        assert served_serial(url, network) == new.serial_number
        assert kept.get(f"{url}/v1/health").status_code == 200  # and it still works


def test_a_broken_certificate_file_leaves_the_last_good_one_in_use(
    network: NetworkConfig,
) -> None:
    url = network.urls["bank-b"]
    _key, chain = party_files(network.folder, "bank-b")
    good = chain.read_bytes()
    before = served_serial(url, network)
    try:
        chain.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot one\n")
        assert served_serial(url, network) == before
        assert health(network, CENTRAL, "bank-a") == 200
    finally:
        chain.write_bytes(good)
    assert served_serial(url, network) == before


# ---- plain HTTP only when asked, loudly ---------------------------------------------------------


def test_plain_http_is_refused_unless_asked_for_on_both_sides(tmp_path: Path) -> None:
    runner = CliRunner()
    tls = init_network(tmp_path / "tls", ("bank-a",))
    asked = runner.invoke(
        cli, ["serve", "central-bank", "--data", str(tls.folder), "--insecure-http"]
    )
    assert asked.exit_code == 2
    assert "--insecure-http serves only a network made with" in asked.output
    plain = init_network(tmp_path / "plain", ("bank-a",), insecure_http=True)
    assert all(url.startswith("http://") for url in plain.urls.values())
    unasked = runner.invoke(cli, ["serve", "central-bank", "--data", str(plain.folder)])
    assert unasked.exit_code == 2
    assert "plain HTTP: serve it only for local debugging" in unasked.output
    assert "Traceback" not in unasked.output + asked.output


def test_a_plain_http_service_warns_at_every_start(tmp_path: Path) -> None:
    plain = init_network(tmp_path / "plain", ("bank-a",), insecure_http=True)
    process = service_process(plain, CENTRAL, insecure_http=True)
    for _ in range(2):
        process.start(timeout=WAIT_S)
        process.stop()
    assert process.log_path.read_text().count("serves PLAIN HTTP") >= 2


def test_an_old_network_without_tls_files_is_a_typed_refusal(tmp_path: Path) -> None:
    network = init_network(tmp_path / "old", ("bank-a",))
    (tls_folder(network.folder) / "ca.pem").unlink()
    with pytest.raises(OffpayError) as refused:
        client_context(network)
    assert refused.value.code == "tls.setup"
    assert "is missing" in refused.value.message


def trusted_cas(network: NetworkConfig) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((tls_folder(network.folder) / "ca.pem").read_bytes())


def answers(url: str, context: ssl.SSLContext) -> bool:
    """Whether the service answers a request on a TLS connection made with ``context`` (in
    TLS 1.3 a refused client certificate shows only after the handshake, as a closed line)."""
    try:
        with handshake(url, context) as conn:
            conn.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return conn.recv(100).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, OSError):
        return False


def issuer_of(url: str, network: NetworkConfig) -> x509.Name:
    with handshake(url, client_context(network)) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return load_certificate(der).issuer


def test_the_tls_ca_is_rotated_while_the_network_runs(tmp_path: Path) -> None:
    """`network tls-renew --new-ca`, then `--retire-old-cas`: clients and services made before
    keep working on new connections throughout; the old CA's certificates end up refused."""
    network = init_network(tmp_path / "rotate", ("bank-a", "bank-b"))
    runner = CliRunner()
    old_chain = party_files(network.folder, "bank-a")[1].read_bytes()
    old_key = party_files(network.folder, "bank-a")[0].read_bytes()
    with served(network):
        remote = RemoteNetwork(network, retries=1)  # made before, kept throughout
        try:
            for bank in network.banks:
                remote.issue(bank, 10_000_00)
            old_issuer = issuer_of(network.urls["bank-a"], network)
            renewed = runner.invoke(
                cli, ["network", "tls-renew", "--data", str(network.folder), "--new-ca"]
            )
            assert renewed.exit_code == 0, renewed.output
            assert (
                len(
                    x509.load_pem_x509_certificates(
                        (tls_folder(network.folder) / "ca.pem").read_bytes()
                    )
                )
                == 2
            )
            assert issuer_of(network.urls["bank-a"], network) != old_issuer
            # Intermediaries reach the central bank and each other with their new certificates.
            alice = remote.add_user("Alice", "bank-a", online=500_00)
            bob = remote.add_user("Bob", "bank-b")
            alice.phone.top_up(alice.pin, remote.money(100_00))
            request = bob.phone.ask(alice.phone.show_identity(), remote.money(30_00))
            bob.phone.accept(bob.pin, alice.phone.pay(alice.pin, request))
            alice.phone.sync(alice.pin)
            retired = runner.invoke(
                cli, ["network", "tls-renew", "--data", str(network.folder), "--retire-old-cas"]
            )
            assert retired.exit_code == 0, retired.output
            assert (
                len(
                    x509.load_pem_x509_certificates(
                        (tls_folder(network.folder) / "ca.pem").read_bytes()
                    )
                )
                == 1
            )
            bob.phone.sync(bob.pin)
            assert bob.shadow == remote.money(30_00)
            remote.check_conservation()
            # A certificate of the retired CA opens no connection any more.
            stolen = tmp_path / "stolen"
            stolen.mkdir()
            (stolen / "tls.pem").write_bytes(old_chain)
            (stolen / "tls.key").write_bytes(old_key)
            context = client_context(network)
            context.load_cert_chain(stolen / "tls.pem", stolen / "tls.key")
            assert answers(network.urls[CENTRAL], client_context(network, "bank-a"))
            assert not answers(network.urls[CENTRAL], context)
        finally:
            remote.close()


def test_an_operators_own_ca_issues_the_services_certificates(tmp_path: Path) -> None:
    """`network tls-certify-ca`: the network root certifies the operator's CA (from a signing
    request; its key never leaves their PKI), whose certificates the services then serve."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from offpay.service.tls_pki import TlsAuthority

    network = init_network(tmp_path / "own", ("bank-a",))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Operator TLS CA")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    (tmp_path / "ca.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = CliRunner().invoke(
        cli,
        [
            "network",
            "tls-certify-ca",
            "--data",
            str(network.folder),
            "--request",
            str(tmp_path / "ca.csr"),
            "--out",
            str(tmp_path / "ca.pem"),
        ],
    )
    assert result.exit_code == 0, result.output
    operator = TlsAuthority(key, x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes()))
    now = dt.datetime.now(dt.UTC)
    crl = tls_folder(network.folder) / "crl.pem"  # the operator publishes its CA's list too
    crl.write_bytes(
        crl.read_bytes()
        + operator.revocation_list([], now).public_bytes(serialization.Encoding.PEM)
    )
    with served(network):
        for name in network.urls:
            leaf_key, leaf = operator.issue(name, ["127.0.0.1"], now)
            key_path, chain_path = party_files(network.folder, name)
            key_path.write_bytes(
                leaf_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            chain_path.write_bytes(
                leaf.public_bytes(serialization.Encoding.PEM)
                + operator.certificate.public_bytes(serialization.Encoding.PEM)
            )
        assert issuer_of(network.urls["bank-a"], network) == subject
        assert health(network, CENTRAL, "bank-a") == 200  # mutual TLS with the operator's
    bad = CliRunner().invoke(
        cli,
        [
            "network",
            "tls-certify-ca",
            "--data",
            str(network.folder),
            "--request",
            str(tmp_path / "ca.pem"),
            "--out",
            str(tmp_path / "x.pem"),
        ],
    )
    assert bad.exit_code == 2 and "not a PEM certificate signing request" in bad.output


@pytest.fixture(scope="module")
def unserved(tmp_path_factory: pytest.TempPathFactory) -> NetworkConfig:
    return init_network(tmp_path_factory.mktemp("crl"), ("bank-a", "bank-b"))


@given(
    revoked=st.sets(st.sampled_from((CENTRAL, "bank-a", "bank-b"))),
    renewals=st.lists(st.sampled_from((CENTRAL, "bank-a", "bank-b")), max_size=3),
)
@settings(max_examples=15)
def test_the_crl_names_every_certificate_of_the_revoked_parties_and_no_other(
    unserved: NetworkConfig, revoked: set[str], renewals: list[str]
) -> None:
    """Whatever was renewed before, a revoked party's every certificate is on the list (an
    old one may still be in a thief's hands), and no other party's."""
    folder, now = unserved.folder, dt.datetime.now(dt.UTC)
    authority = load_authority(folder, CENTRAL)
    for name in renewals:
        issue_party(folder, CENTRAL, authority, name, ["127.0.0.1"], now)
    write_crl(folder, CENTRAL, authority, revoked, now)
    [crl] = read_crls(tls_folder(folder) / "crl.pem")
    assert crl.is_signature_valid(authority.certificate.public_key())  # type: ignore[arg-type]
    listed = {format(entry.serial_number, "x") for entry in crl}
    assert listed == {
        serial for serial, party in issued(folder, CENTRAL).items() if party in revoked
    }
