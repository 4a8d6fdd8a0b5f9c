"""The terminal module's personalisation takes only its own certificate, from its own
intermediary, with a valid policy, and only once; a refusal leaves it blank."""

from __future__ import annotations

import dataclasses

import pytest

from offpay.crypto.keys import Signer
from offpay.crypto.pki import Authority, Role
from offpay.device.card import key_fingerprint
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.sim.network import OfflineNetwork
from offpay.wire.envelope import Signed


@pytest.fixture
def parts() -> tuple[OfflineNetwork, TerminalModule, str, tuple[bytes, ...], Signed]:
    net = OfflineNetwork()
    bank = net.banks["bank-a"]
    module = TerminalModule.manufacture()
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    key = load_der_public_key(module.public_key)
    terminal_id = f"terminal:bank-a:{key_fingerprint(key)[:12]}"
    chain = bank.ca.issue(terminal_id, Role.TERMINAL, key, bank.clock())  # type: ignore[arg-type]
    policy = bank.current_policy()
    assert policy is not None
    return net, module, terminal_id, chain, policy[0]


def refused(module: TerminalModule, code_prefix: str, *args: object) -> None:
    with pytest.raises(OffpayError) as exc:
        module.personalise(*args)  # type: ignore[arg-type]
    assert exc.value.code.startswith(code_prefix), exc.value.code
    with pytest.raises(OffpayError) as blank:
        _ = module.state
    assert blank.value.code == "device.blank"


def test_malformed_chain(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, _, policy = parts
    refused(
        module, "wire.malformed", tid, "bank-a", net.central.root_der, (b"\x00garbage",), policy
    )


def test_certificate_of_another_key(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, _, policy = parts
    bank = net.banks["bank-a"]
    other = bank.ca.issue(tid, Role.TERMINAL, Signer.generate().public_key, bank.clock())
    refused(module, "crypto.bad_certificate", tid, "bank-a", net.central.root_der, other, policy)


def test_certificate_from_another_root(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, _, policy = parts
    bank = net.banks["bank-a"]
    rogue = Authority.root(bank.clock()).intermediary("bank-a", bank.clock())
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    forged = rogue.issue(tid, Role.TERMINAL, load_der_public_key(module.public_key), bank.clock())  # type: ignore[arg-type]
    refused(module, "crypto.bad_certificate", tid, "bank-a", net.central.root_der, forged, policy)


def test_wrong_receiver_identity(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, chain, policy = parts
    refused(
        module,
        "crypto.bad_certificate",
        "terminal:bank-a:other",
        "bank-a",
        net.central.root_der,
        chain,
        policy,
    )
    refused(module, "crypto.bad_certificate", tid, "bank-b", net.central.root_der, chain, policy)


def test_policy_with_a_broken_signature(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, chain, policy = parts
    bad = dataclasses.replace(policy, signature=bytes(len(policy.signature)))
    refused(module, "policy", tid, "bank-a", net.central.root_der, chain, bad)


def test_policy_of_another_bank(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, chain, _ = parts
    other = net.banks["bank-b"].current_policy()
    assert other is not None
    refused(module, "policy", tid, "bank-a", net.central.root_der, chain, other[0])


def test_personalisation_is_accepted_once(parts) -> None:  # type: ignore[no-untyped-def]
    net, module, tid, chain, policy = parts
    module.personalise(tid, "bank-a", net.central.root_der, chain, policy)
    before = module.state
    with pytest.raises(OffpayError) as exc:
        module.personalise(tid, "bank-a", net.central.root_der, chain, policy)  # a replay
    assert exc.value.code == "device.personalised"
    assert module.state == before
