"""Signature algorithms, the certificate hierarchy, the canonical codec, sealed storage and the
APDU framing: each accepts what is well formed and genuine, and refuses everything else with
its typed error."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from offpay.crypto.keys import (
    Algorithm,
    Signer,
    algorithm_of,
    parse_algorithm,
    public_key_bytes,
    verify_signature,
)
from offpay.crypto.pki import Authority, Credential, Role, TrustStore, load_certificate
from offpay.crypto.sealing import NONCE_BYTES, Sealer
from offpay.device.apdu import SW, Command, Response, error_response, raise_for, status_for
from offpay.device.reader import CardClient
from offpay.errors import (
    AddressError,
    CertificateError,
    DeviceStateError,
    EncodingError,
    InsufficientFunds,
    LimitExceeded,
    NotFound,
    OffpayError,
    PinError,
    ReplayError,
    SealError,
    SignatureError,
)
from offpay.money import CURRENCIES, MAX_MINOR, Money
from offpay.sim.network import OfflineNetwork
from offpay.wire.codec import MAX_MESSAGE_BYTES, _fast_decoder, decode, encode, from_obj, to_obj
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    CardIdentity,
    CardInstruction,
    CardSession,
    Direction,
    LogEntry,
    OfflinePayment,
    Operation,
    PaymentRequest,
    ReserveTransfer,
)

ALGORITHMS = list(Algorithm)
NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


# --- signature algorithms ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def signers() -> dict[Algorithm, Signer]:
    return {alg: Signer.generate(alg) for alg in Algorithm}


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_and_verify(signers: dict[Algorithm, Signer], alg: Algorithm) -> None:
    signer = signers[alg]
    assert signer.algorithm is alg
    assert algorithm_of(signer.key) is alg
    assert algorithm_of(signer.public_key) is alg
    signature = signer.sign(b"pay SEK 30")
    verify_signature(signer.public_key, signature, b"pay SEK 30")  # does not raise


def _tampered(signer: Signer, other: Signer, how: str) -> tuple[object, bytes, bytes]:
    data = b"pay SEK 30"
    signature = signer.sign(data)
    flipped = bytearray(signature)
    flipped[len(flipped) // 2] ^= 0x01
    return {
        "data": (signer.public_key, signature, b"pay SEK 31"),
        "signature": (signer.public_key, bytes(flipped), data),
        "truncated-signature": (signer.public_key, signature[:-1], data),
        "empty-signature": (signer.public_key, b"", data),
        "other-key": (other.public_key, signature, data),
    }[how]


@pytest.mark.parametrize(
    "how", ["data", "signature", "truncated-signature", "empty-signature", "other-key"]
)
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_tampering_is_refused(signers: dict[Algorithm, Signer], alg: Algorithm, how: str) -> None:
    key, signature, data = _tampered(signers[alg], Signer.generate(alg), how)
    with pytest.raises(SignatureError) as exc:
        verify_signature(key, signature, data)  # type: ignore[arg-type]
    assert exc.value.code == "crypto.bad_signature"


@pytest.mark.parametrize(
    ("signed_with", "checked_with"), list(itertools.permutations(ALGORITHMS, 2))
)
def test_signature_of_one_algorithm_does_not_verify_under_another(
    signers: dict[Algorithm, Signer], signed_with: Algorithm, checked_with: Algorithm
) -> None:
    signature = signers[signed_with].sign(b"data")
    with pytest.raises(SignatureError):
        verify_signature(signers[checked_with].public_key, signature, b"data")


def test_unsupported_key_is_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SignatureError):
        algorithm_of(p384)
    with pytest.raises(SignatureError):
        verify_signature(p384.public_key(), b"x" * 64, b"data")  # type: ignore[arg-type]


def test_algorithm_names() -> None:
    assert [parse_algorithm(a.value) for a in Algorithm] == list(Algorithm)
    for name in ["rsa", "ED25519", "", "ml-dsa-44"]:
        with pytest.raises(OffpayError) as exc:
            parse_algorithm(name)
        assert exc.value.code == "crypto.unknown_algorithm"


def test_public_key_bytes_are_stable(signers: dict[Algorithm, Signer]) -> None:
    for signer in signers.values():
        assert public_key_bytes(signer.public_key) == public_key_bytes(signer.key.public_key())  # type: ignore[arg-type]
    assert len({public_key_bytes(s.public_key) for s in signers.values()}) == len(signers)


# --- the certificate hierarchy ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    root: Authority
    ca: Authority  # bank-x
    ca_y: Authority  # bank-y
    trust: TrustStore

    def cred(self, subject: str, role: Role, ca: Authority | None = None) -> Credential:
        return (ca or self.ca).credential_for(subject, role, NOW, Algorithm.ED25519)


@pytest.fixture
def pki() -> Pki:
    root = Authority.root(NOW)
    return Pki(
        root,
        root.intermediary("bank-x", NOW),
        root.intermediary("bank-y", NOW),
        TrustStore(root.credential.chain[0]),
    )


@pytest.mark.parametrize(("role", "length"), [(Role.ENGINE, 2), (Role.CARD, 2), (Role.TERMINAL, 2)])
def test_intermediary_certificates_chain_to_the_root(pki: Pki, role: Role, length: int) -> None:
    cred = pki.cred(f"bank-x/{role.value}", role)
    assert len(cred.chain) == length
    ident = pki.trust.verify_chain(cred.chain)
    assert (ident.id, ident.role, ident.institution) == (f"bank-x/{role.value}", role, "bank-x")
    assert public_key_bytes(ident.public_key) == public_key_bytes(cred.signer.public_key)
    assert pki.trust.verify_chain(cred.chain, NOW) == ident


def test_root_certifies_notary_and_intermediary_cas(pki: Pki) -> None:
    notary = pki.root.credential_for("central-bank/notary", Role.NOTARY, NOW, Algorithm.ED25519)
    assert pki.trust.verify_chain(notary.chain).role is Role.NOTARY
    assert pki.trust.verify_chain(pki.ca.credential.chain).role is Role.CA


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_chains_in_every_algorithm_and_mixed(alg: Algorithm) -> None:
    others = [a for a in Algorithm if a is not alg]
    root = Authority.root(NOW, alg)
    ca = root.intermediary("bank-x", NOW, others[0])
    card = ca.credential_for("card:x", Role.CARD, NOW, others[1])
    trust = TrustStore(root.credential.chain[0])
    assert trust.verify_chain(card.chain, NOW).role is Role.CARD
    assert algorithm_of(load_certificate(card.chain[0]).public_key()) is others[1]


def test_certificate_from_another_root_is_refused(pki: Pki) -> None:
    other_root = Authority.root(NOW)
    impostor = other_root.intermediary("bank-x", NOW)  # same names, another root
    for chain in [
        impostor.credential_for("bank-x/engine", Role.ENGINE, NOW, Algorithm.ED25519).chain,
        impostor.credential.chain,
        other_root.credential_for("central-bank/notary", Role.NOTARY, NOW, Algorithm.ED25519).chain,
        other_root.credential.chain,
    ]:
        with pytest.raises(CertificateError) as exc:
            pki.trust.verify_chain(chain)
        assert exc.value.code == "crypto.bad_certificate"


def test_leaf_swapped_under_another_intermediary_is_refused(pki: Pki) -> None:
    card = pki.cred("card:x", Role.CARD)
    with pytest.raises(CertificateError):
        pki.trust.verify_chain((card.chain[0], pki.ca_y.credential.chain[0]))


@pytest.mark.parametrize("role", [Role.CARD, Role.TERMINAL, Role.ENGINE])
def test_an_end_entity_cannot_certify_anything(pki: Pki, role: Role) -> None:
    holder = pki.cred(f"bank-x/{role.value}", role)
    fake_ca = Authority(holder)
    forged = fake_ca.issue("card:forged", Role.CARD, Signer.generate().public_key, NOW)
    assert len(forged) == 3
    with pytest.raises(CertificateError):
        pki.trust.verify_chain(forged)
    with pytest.raises(CertificateError):
        pki.trust.verify_chain(forged[:2])  # leaf and the end entity alone


def test_a_card_certified_by_the_root_cannot_certify_either(pki: Pki) -> None:
    """Even with a signature that verifies up to the root, a middle certificate must be an
    intermediary's CA."""
    signer = Signer.generate()
    chain = pki.root.issue("card:root-made", Role.CARD, signer.public_key, NOW, institution="x")
    with pytest.raises(CertificateError):
        pki.trust.verify_chain(chain)  # a card needs an intermediary
    fake_ca = Authority(Credential(signer, chain))
    forged = fake_ca.issue("card:forged", Role.CARD, Signer.generate().public_key, NOW)
    assert len(forged) == 2
    with pytest.raises(CertificateError, match="not an intermediary CA"):
        pki.trust.verify_chain(forged)


def test_an_intermediary_cannot_certify_a_ca(pki: Pki) -> None:
    with pytest.raises(CertificateError):
        pki.ca.issue("bank-z ca", Role.CA, Signer.generate().public_key, NOW)


@pytest.mark.parametrize("role", [Role.NOTARY, Role.ROOT])
def test_an_intermediary_cannot_certify_central_bank_roles(pki: Pki, role: Role) -> None:
    chain = pki.ca.issue("central-bank/notary", role, Signer.generate().public_key, NOW)
    with pytest.raises(CertificateError):
        pki.trust.verify_chain(chain)


def test_an_intermediary_cannot_certify_for_another_institution(pki: Pki) -> None:
    key = Signer.generate().public_key
    chain = pki.ca.issue("bank-y/engine", Role.ENGINE, key, NOW, institution="bank-y")
    with pytest.raises(CertificateError, match="another institution"):
        pki.trust.verify_chain(chain)


def test_the_root_itself_is_not_a_usable_leaf(pki: Pki) -> None:
    with pytest.raises(CertificateError):
        pki.trust.verify_chain(pki.root.credential.chain)


def test_chain_length_and_encoding(pki: Pki) -> None:
    card = pki.cred("card:x", Role.CARD)
    for chain in [(), (*card.chain, pki.root.credential.chain[0])]:
        with pytest.raises(CertificateError):
            pki.trust.verify_chain(chain)
    with pytest.raises(EncodingError) as exc:
        pki.trust.verify_chain((b"not a certificate", card.chain[1]))
    assert exc.value.code == "wire.malformed"


def test_expect_checks_role_and_institution(pki: Pki) -> None:
    engine = pki.cred("bank-x/engine", Role.ENGINE)
    assert pki.trust.expect(engine.chain, Role.ENGINE, institution="bank-x").id == "bank-x/engine"
    assert pki.trust.expect(engine.chain, Role.ENGINE).institution == "bank-x"
    with pytest.raises(CertificateError, match="expected a card"):
        pki.trust.expect(engine.chain, Role.CARD)
    with pytest.raises(CertificateError, match="bank-y"):
        pki.trust.expect(engine.chain, Role.ENGINE, institution="bank-y")


def test_revoked_identity_is_refused(pki: Pki) -> None:
    card = pki.cred("card:x", Role.CARD)
    pki.trust.verify_chain(card.chain)  # cached first: revocation must still apply
    pki.trust.revoked.add("card:x")
    with pytest.raises(CertificateError) as exc:
        pki.trust.verify_chain(card.chain)
    assert exc.value.code == "crypto.revoked"


@pytest.mark.parametrize(
    "when",
    [NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=6 * 365)],
    ids=["before-issue", "after-expiry"],
)
def test_validity_period_is_checked_when_a_time_is_given(pki: Pki, when: dt.datetime) -> None:
    card = pki.cred("card:x", Role.CARD)
    with pytest.raises(CertificateError, match="validity"):
        pki.trust.verify_chain(card.chain, when)
    assert pki.trust.verify_chain(card.chain).id == "card:x"  # devices carry no clock


def test_validity_period_is_checked_even_after_a_timeless_check(pki: Pki) -> None:
    """A service verifies a card's payment without a time (it may be old) and later the same
    card's session with the time: the cached result of the first must not excuse the second
    from the validity check."""
    card = pki.cred("card:x", Role.CARD)
    pki.trust.verify_chain(card.chain)
    with pytest.raises(CertificateError, match="validity"):
        pki.trust.verify_chain(card.chain, NOW + dt.timedelta(days=6 * 365))


# --- signed envelopes -------------------------------------------------------------------------


def _transfer(sender: str = "bank-x/engine", receiver: str = "notary") -> ReserveTransfer:
    return ReserveTransfer(sender, receiver, b"n" * 16, Money(10_00))


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_envelope_round_trip_in_every_algorithm(alg: Algorithm) -> None:
    root = Authority.root(NOW, alg)
    engine = root.intermediary("bank-x", NOW, alg).credential_for(
        "bank-x/engine", Role.ENGINE, NOW, alg
    )
    trust = TrustStore(root.credential.chain[0])
    data = sign(_transfer(), engine).to_bytes()
    msg, ident = open_signed(
        data, ReserveTransfer, trust, Role.ENGINE, receiver="notary", institution="bank-x", now=NOW
    )
    assert msg == _transfer()
    assert ident.id == "bank-x/engine"
    env = Signed.from_bytes(data)
    bad = dataclasses.replace(env, payload=encode(dataclasses.replace(msg, amount=Money(1))))
    with pytest.raises(SignatureError):
        open_signed(bad, ReserveTransfer, trust, Role.ENGINE, receiver="notary")


def test_envelope_refusals(pki: Pki) -> None:
    engine = pki.cred("bank-x/engine", Role.ENGINE)
    other = pki.cred("bank-x/other", Role.ENGINE)
    good = sign(_transfer(), engine)
    t = pki.trust

    with pytest.raises(AddressError) as addr:
        open_signed(good, ReserveTransfer, t, Role.ENGINE, receiver="somebody-else")
    assert addr.value.code == "wire.wrong_receiver"
    with pytest.raises(CertificateError):
        open_signed(good, ReserveTransfer, t, Role.CARD, receiver="notary")
    with pytest.raises(CertificateError):
        open_signed(good, ReserveTransfer, t, Role.ENGINE, receiver="notary", institution="bank-y")
    with pytest.raises(SignatureError, match="claims sender"):
        impersonation = sign(_transfer(sender="bank-x/other"), engine)
        open_signed(impersonation, ReserveTransfer, t, Role.ENGINE, receiver="notary")
    with pytest.raises(SignatureError):
        swapped_chain = dataclasses.replace(good, chain=other.chain)
        open_signed(swapped_chain, ReserveTransfer, t, Role.ENGINE, receiver="notary")
    with pytest.raises(EncodingError):
        open_signed(good, CardInstruction, t, Role.ENGINE, receiver="notary")
    msg, _ = open_signed(good.to_bytes(), ReserveTransfer, t, Role.ENGINE, receiver="notary")
    assert msg == _transfer()


# --- a whole network in each algorithm --------------------------------------------------------


@pytest.mark.parametrize("alg", [Algorithm.ECDSA_P256, Algorithm.ML_DSA_65])
def test_network_end_to_end(alg: Algorithm) -> None:
    n = OfflineNetwork(algorithm=alg)
    n.issue("bank-a", 10_000_00)
    n.issue("bank-b", 10_000_00)
    alice = n.add_user("Alice", "bank-a", online=1_000_00)
    bob = n.add_user("Bob", "bank-b")
    shop = n.add_merchant("Shop", "bank-b")
    for chain in (alice.card.state.chain, shop.module.state.chain):
        assert algorithm_of(load_certificate(chain[0]).public_key()) is alg
    alice.phone.top_up("1234", n.money(200_00))
    shop.pos.charge(alice.card.process, "1234", n.money(30_00))
    request = bob.phone.ask(alice.phone.show_identity(), n.money(80_00))
    bob.phone.accept("1234", alice.phone.pay("1234", request))
    alice.phone.sync("1234")
    bob.phone.sync("1234")
    shop.pos.sync()
    assert (alice.card_balance, alice.shadow, alice.online) == (
        n.money(90_00),
        n.money(90_00),
        n.money(800_00),
    )
    assert (bob.card_balance, bob.shadow) == (n.money(80_00), n.money(80_00))
    assert shop.wallet == n.money(30_00)
    assert n.central.notarised_count() == 2
    n.check_conservation()


# --- codec strictness -------------------------------------------------------------------------

REQUEST = PaymentRequest(
    sender="terminal:bank-b:1",
    receiver="card:bank-a:2",
    payee_institution="bank-b",
    request_id=b"r" * 16,
    challenge=b"c" * 16,
    amount=Money(30_00),
)
PAYMENT = OfflinePayment(
    sender="card:bank-a:2",
    receiver="terminal:bank-b:1",
    payer_institution="bank-a",
    payee_institution="bank-b",
    payer_seq=5,
    amount=Money(30_00),
    request=Signed(encode(REQUEST), b"s" * 64, (b"cert",)),
    payer_received=Money(0),
    funding=(),
)

PAYMENT_ENV: Signed[OfflinePayment] = Signed(encode(PAYMENT), b"s" * 64, (b"cert",))


def _with(obj: dict[str, object], **changes: object) -> bytes:
    return cbor2.dumps({**obj, **changes}, canonical=True)


def _without(obj: dict[str, object], key: str) -> bytes:
    return cbor2.dumps({k: v for k, v in obj.items() if k != key}, canonical=True)


def _request_obj() -> dict[str, object]:
    return to_obj(REQUEST)  # type: ignore[no-any-return]


def _payment_obj() -> dict[str, object]:
    return to_obj(PAYMENT)  # type: ignore[no-any-return]


STRUCTURAL = {
    "extra-field": (PaymentRequest, lambda: _with(_request_obj(), note="hi")),
    "missing-field": (PaymentRequest, lambda: _without(_request_obj(), "amount")),
    "missing-tag": (PaymentRequest, lambda: _without(_request_obj(), "t")),
    "other-tag": (PaymentRequest, lambda: _with(_request_obj(), t="offline-payment")),
    "sender-int": (PaymentRequest, lambda: _with(_request_obj(), sender=5)),
    "sender-bytes": (PaymentRequest, lambda: _with(_request_obj(), sender=b"x")),
    "request-id-text": (PaymentRequest, lambda: _with(_request_obj(), request_id="r")),
    "amount-text": (PaymentRequest, lambda: _with(_request_obj(), amount="SEK 30.00")),
    "amount-short": (PaymentRequest, lambda: _with(_request_obj(), amount=[3000])),
    "amount-long": (PaymentRequest, lambda: _with(_request_obj(), amount=[3000, "SEK", 1])),
    "amount-bool": (PaymentRequest, lambda: _with(_request_obj(), amount=[True, "SEK"])),
    "amount-float": (PaymentRequest, lambda: _with(_request_obj(), amount=[30.0, "SEK"])),
    "amount-currency": (PaymentRequest, lambda: _with(_request_obj(), amount=[3000, "XXX"])),
    "amount-overflow": (PaymentRequest, lambda: _with(_request_obj(), amount=[2**63, "SEK"])),
    "amount-null": (PaymentRequest, lambda: _with(_request_obj(), amount=None)),
    "seq-bool": (OfflinePayment, lambda: _with(_payment_obj(), payer_seq=True)),
    "seq-float": (OfflinePayment, lambda: _with(_payment_obj(), payer_seq=5.0)),
    "seq-text": (OfflinePayment, lambda: _with(_payment_obj(), payer_seq="5")),
    "nested-bytes": (OfflinePayment, lambda: _with(_payment_obj(), request=b"x")),
    "nested-extra": (
        OfflinePayment,
        lambda: _with(_payment_obj(), request={**_payment_obj()["request"], "x": 1}),  # type: ignore[dict-item]
    ),
    "chain-not-list": (
        OfflinePayment,
        lambda: _with(
            _payment_obj(),
            request={**_payment_obj()["request"], "chain": b"cert"},  # type: ignore[dict-item]
        ),
    ),
    "direction-unknown": (
        LogEntry,
        lambda: _with(to_obj(LogEntry(1, Direction.IN, PAYMENT_ENV)), direction="sideways"),
    ),
    "not-a-map": (PaymentRequest, lambda: cbor2.dumps([1, 2, 3])),
}


@pytest.mark.parametrize("case", list(STRUCTURAL))
def test_codec_refuses_structural_faults(case: str) -> None:
    cls, make = STRUCTURAL[case]
    data = make()
    with pytest.raises(EncodingError) as exc:
        decode(data, cls)
    assert exc.value.code == "wire.malformed"


def test_codec_accepts_the_unspoiled_originals() -> None:
    assert decode(encode(REQUEST), PaymentRequest) == REQUEST
    assert decode(encode(PAYMENT), OfflinePayment) == PAYMENT
    entry = LogEntry(1, Direction.IN, PAYMENT_ENV)
    assert decode(encode(entry), LogEntry) == entry


def _non_canonical() -> dict[str, bytes]:
    entry = encode(LogEntry(5, Direction.OUT, PAYMENT_ENV))
    assert b"\x63seq\x05" in entry
    count = entry[0] - 0xA0
    return {
        "keys-unsorted": cbor2.dumps(dict(reversed(list(cbor2.loads(entry).items())))),
        "long-integer": entry.replace(b"\x63seq\x05", b"\x63seq\x18\x05"),
        "indefinite-text": entry.replace(b"\x63seq\x05", b"\x7f\x63seq\xff\x05"),
        "duplicate-key": bytes([0xA0 + count + 1]) + entry[1:] + b"\x63seq\x05",
        "self-describe-tag": b"\xd9\xd9\xf7" + entry,
        "trailing-byte": entry + b"\x00",
        "truncated": entry[:-1],
    }


@pytest.mark.parametrize("case", list(_non_canonical()))
def test_codec_refuses_non_canonical_encodings(case: str) -> None:
    data = _non_canonical()[case]
    assert data != encode(LogEntry(5, Direction.OUT, PAYMENT_ENV))
    with pytest.raises(EncodingError) as exc:
        decode(data, LogEntry)
    assert exc.value.code == "wire.malformed"


def test_codec_refuses_non_bytes_and_oversized_input() -> None:
    for data in ["text", None, 5, [1]]:
        with pytest.raises(EncodingError):
            decode(data, PaymentRequest)  # type: ignore[arg-type]
    huge = cbor2.dumps(b"x" * MAX_MESSAGE_BYTES)
    with pytest.raises(EncodingError):
        decode(huge, PaymentRequest)


def test_codec_refuses_a_message_of_another_type() -> None:
    with pytest.raises(EncodingError):
        decode(encode(REQUEST), OfflinePayment)
    with pytest.raises(EncodingError):
        decode(encode(PAYMENT), CardIdentity)


# --- round trips over arbitrary content -------------------------------------------------------

ids = st.text(max_size=40)
nonces = st.binary(max_size=40)
money = st.builds(
    Money,
    st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR),
    st.sampled_from(sorted(CURRENCIES)),
)
requests = st.builds(PaymentRequest, ids, ids, ids, nonces, nonces, money)
envelopes = st.builds(
    Signed,
    requests.map(encode),
    st.binary(max_size=80),
    st.lists(st.binary(max_size=60), max_size=3).map(tuple),
)
plain_payments = st.builds(
    OfflinePayment,
    ids,
    ids,
    ids,
    ids,
    st.integers(min_value=0, max_value=2**64),
    money,
    envelopes,
    money,
    st.just(()),
)
payments = st.builds(
    OfflinePayment,
    ids,
    ids,
    ids,
    ids,
    st.integers(min_value=0, max_value=2**64),
    money,
    envelopes,
    money,
    st.lists(plain_payments.map(lambda p: Signed(encode(p), b"s", (b"c",))), max_size=2).map(tuple),
)


@settings(deadline=None)
@given(requests)
def test_payment_request_round_trip(msg: PaymentRequest) -> None:
    data = encode(msg)
    assert decode(data, PaymentRequest) == msg
    assert encode(decode(data, PaymentRequest)) == data


@settings(deadline=None)
@given(payments)
def test_offline_payment_round_trip(msg: OfflinePayment) -> None:
    data = encode(msg)
    back = decode(data, OfflinePayment)
    assert back == msg
    assert decode(back.request.payload, PaymentRequest) == decode(
        msg.request.payload, PaymentRequest
    )
    assert back.tx_id == msg.tx_id


@settings(deadline=None)
@given(payments)
def test_fast_encoding_is_the_canonical_encoding(msg: OfflinePayment) -> None:
    """encode builds maps in canonical key order and skips cbor2's sorting: same bytes."""
    entry = LogEntry(3, Direction.IN, Signed(encode(msg), b"s", (b"c",)))
    for m in (msg, entry):
        assert encode(m) == cbor2.dumps(to_obj(m), canonical=True)


@settings(deadline=None)
@given(payments, st.sampled_from(Direction))
def test_fast_decoding_takes_canonical_messages(msg: OfflinePayment, way: Direction) -> None:
    """The generated decoder accepts what encode makes (so decode's fast path is taken) and
    builds the same message as the general path."""
    entry = LogEntry(3, way, Signed(encode(msg), b"s", (b"c",)))
    for m in (msg, entry):
        obj = cbor2.loads(encode(m))
        assert _fast_decoder(type(m))(obj) == from_obj(obj, type(m)) == m


full_requests = st.builds(
    PaymentRequest,
    ids,
    ids,
    ids,
    nonces,
    nonces,
    money,
    st.none() | st.integers(min_value=0, max_value=2**40),
    st.none() | st.binary(min_size=32, max_size=32),
)


@settings(deadline=None)
@given(full_requests)
def test_fast_decoding_takes_messages_with_fields_left_out(msg: PaymentRequest) -> None:
    """A request's time and sealing key are left out while None: the generated decoder takes
    each combination and builds what the general path builds."""
    data = encode(msg)
    obj = cbor2.loads(data)
    assert _fast_decoder(PaymentRequest)(obj) == from_obj(obj, PaymentRequest) == msg
    assert decode(data, PaymentRequest) == msg


@pytest.mark.parametrize(
    "spoil",
    [
        lambda obj: {**obj, "seal_to": None},  # an absent field written as nil
        lambda obj: {**obj, "zzz": 1},  # a key the message does not have
        lambda obj: {k: v for k, v in obj.items() if k != "amount"},  # a required one missing
        lambda obj: {**obj, "seal_to": "key"},  # of another type
    ],
)
def test_a_request_with_fields_left_out_is_still_refused_when_spoiled(spoil) -> None:  # type: ignore[no-untyped-def]
    obj = cbor2.loads(encode(dataclasses.replace(REQUEST, seal_to=b"k" * 32)))
    spoiled = spoil(obj)
    order = cbor2.loads(cbor2.dumps(dict.fromkeys(spoiled, 0), canonical=True))
    with pytest.raises(EncodingError) as exc:
        decode(cbor2.dumps({k: spoiled[k] for k in order}), PaymentRequest)
    assert exc.value.code == "wire.malformed"


def test_unusual_field_values_encode_as_the_general_path_does() -> None:
    class Text(str):
        pass

    for odd in (
        dataclasses.replace(REQUEST, sender=Text("terminal:bank-b:1")),
        dataclasses.replace(REQUEST, request_id=1.5),  # type: ignore[arg-type]
        dataclasses.replace(REQUEST, challenge={"b": 1, "a": 2}),  # type: ignore[arg-type]
    ):
        assert encode(odd) == cbor2.dumps(to_obj(odd), canonical=True)


def test_codec_refuses_unsorted_keys_in_a_nested_message() -> None:
    obj = _payment_obj()
    nested = obj["request"]
    assert isinstance(nested, dict)
    obj["request"] = dict(reversed(list(nested.items())))
    order = cbor2.loads(cbor2.dumps(dict.fromkeys(obj, 0), canonical=True))
    data = cbor2.dumps({k: obj[k] for k in order})  # the outer map sorted, the inner reversed
    assert data != encode(PAYMENT) and len(data) == len(encode(PAYMENT))
    with pytest.raises(EncodingError) as exc:
        decode(data, OfflinePayment)
    assert exc.value.code == "wire.malformed"
    assert "canonical" in exc.value.message


@settings(deadline=None)
@given(
    st.lists(
        st.builds(
            LogEntry,
            st.integers(0, 2**40),
            st.sampled_from(Direction),
            payments.map(lambda p: Signed(encode(p), b"s", (b"c",))),
        ),
        max_size=4,
    ),
    money,
    st.sampled_from(Operation),
)
def test_card_session_round_trip(log: list[LogEntry], amount: Money, op: Operation) -> None:
    msg = CardSession(
        "card:x", "bank-x/engine", b"n" * 16, 7, amount, 2, 1, 0, 1, op, amount, tuple(log), None
    )
    assert decode(encode(msg), CardSession) == msg


# --- sealed storage ---------------------------------------------------------------------------


def test_seal_round_trip() -> None:
    sealer = Sealer.generate()
    sealed = sealer.seal(b"record", b"terminal:1\x001")
    assert sealer.unseal(sealed, b"terminal:1\x001") == b"record"
    assert sealed != sealer.seal(b"record", b"terminal:1\x001")  # a fresh nonce each time


def _seal_refusals() -> dict[str, tuple[Sealer, bytes, bytes]]:
    sealer = Sealer.generate(bytes(range(32)))
    sealed = sealer.seal(b"record", b"terminal:1\x001", nonce=b"\x00" * NONCE_BYTES)

    def flip(i: int) -> bytes:
        b = bytearray(sealed)
        b[i] ^= 0x01
        return bytes(b)

    return {
        "nonce-altered": (sealer, flip(0), b"terminal:1\x001"),
        "ciphertext-altered": (sealer, flip(NONCE_BYTES), b"terminal:1\x001"),
        "tag-altered": (sealer, flip(-1), b"terminal:1\x001"),
        "truncated": (sealer, sealed[:-1], b"terminal:1\x001"),
        "nonce-only": (sealer, sealed[:NONCE_BYTES], b"terminal:1\x001"),
        "empty": (sealer, b"", b"terminal:1\x001"),
        "other-slot": (sealer, sealed, b"terminal:1\x002"),
        "other-terminal": (sealer, sealed, b"terminal:2\x001"),
        "other-key": (Sealer.generate(), sealed, b"terminal:1\x001"),
    }


@pytest.mark.parametrize("case", list(_seal_refusals()))
def test_altered_or_misplaced_sealed_record_is_refused(case: str) -> None:
    sealer, sealed, associated = _seal_refusals()[case]
    with pytest.raises(OffpayError) as exc:
        sealer.unseal(sealed, associated)
    assert exc.value.code == "seal.invalid"


@settings(deadline=None)
@given(
    plaintext=st.binary(max_size=200),
    position=st.integers(min_value=0),
    xor=st.integers(min_value=1, max_value=255),
)
def test_any_change_to_a_sealed_record_is_refused(
    plaintext: bytes, position: int, xor: int
) -> None:
    sealer = Sealer.generate(b"k" * 32)
    sealed = bytearray(sealer.seal(plaintext, b"aad"))
    assert sealer.unseal(bytes(sealed), b"aad") == plaintext
    sealed[position % len(sealed)] ^= xor
    with pytest.raises(OffpayError) as exc:
        sealer.unseal(bytes(sealed), b"aad")
    assert exc.value.code == "seal.invalid"


# --- APDU framing -----------------------------------------------------------------------------

byte = st.integers(min_value=0, max_value=255)
short_data = st.binary(max_size=255)
extended_data = st.integers(min_value=256, max_value=0xFFFF).map(
    lambda n: bytes((i * 7 + n) % 256 for i in range(n))
)


@settings(deadline=None)
@given(byte, byte, byte, byte, st.one_of(short_data, extended_data))
def test_command_round_trip(cla: int, ins: int, p1: int, p2: int, data: bytes) -> None:
    cmd = Command(cla, ins, p1, p2, data)
    raw = cmd.to_bytes()
    assert Command.from_bytes(raw) == cmd
    header = 4 if not data else (5 if len(data) <= 255 else 7)
    assert len(raw) == header + len(data)


@pytest.mark.parametrize(
    ("n", "lc"),
    [(0, b""), (1, b"\x01"), (255, b"\xff"), (256, b"\x00\x01\x00"), (0xFFFF, b"\x00\xff\xff")],
)
def test_command_length_encoding(n: int, lc: bytes) -> None:
    raw = Command(0x80, 0xD0, 1, 2, b"\xab" * n).to_bytes()
    assert raw[:4] == b"\x80\xd0\x01\x02"
    assert raw[4 : 4 + len(lc)] == lc
    assert Command.from_bytes(raw).data == b"\xab" * n


def test_command_too_long_for_extended_length() -> None:
    with pytest.raises(EncodingError):
        Command(0x80, 0xD0, 0, 0, b"\x00" * 0x10000).to_bytes()


@settings(deadline=None)
@given(st.one_of(short_data, extended_data), st.integers(min_value=1))
def test_command_with_wrong_length_is_refused(data: bytes, cut: int) -> None:
    raw = Command(0x80, 0xD0, 0, 0, data).to_bytes()
    if data:
        with pytest.raises(EncodingError):
            # three bytes more than the length field says: not even an Le field explains them
            Command.from_bytes(raw + b"\x00\x00\x00")
    if len(data) >= 2:
        # fewer, but at least one data byte left (a bare Lc byte would be a valid Le)
        with pytest.raises(EncodingError):
            Command.from_bytes(raw[: len(raw) - 1 - (cut - 1) % (len(data) - 1)])


@settings(deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=0xFFFF))
def test_response_round_trip(data: bytes, sw: int) -> None:
    response = Response(data, sw)
    assert Response.from_bytes(response.to_bytes()) == response
    assert response.ok is (sw == SW.OK)


def test_response_shorter_than_status_word() -> None:
    for raw in (b"", b"\x90"):
        with pytest.raises(EncodingError):
            Response.from_bytes(raw)


@pytest.mark.parametrize(
    ("error", "cls", "sw"),
    [
        (EncodingError("x"), EncodingError, SW.WRONG_DATA),
        (SignatureError("x"), SignatureError, SW.SECURITY_NOT_SATISFIED),
        (AddressError("x"), AddressError, SW.SECURITY_NOT_SATISFIED),
        (ReplayError("x", code="wire.replay.duplicate"), ReplayError, SW.SECURITY_NOT_SATISFIED),
        (PinError("x", tries_left=2), PinError, 0x63C2),
        (PinError("x", code="pin.blocked"), PinError, SW.AUTH_BLOCKED),
        (PinError("x", code="pin.required"), PinError, SW.CONDITIONS_NOT_SATISFIED),
        (LimitExceeded("card_max_balance", "x"), LimitExceeded, SW.CONDITIONS_NOT_SATISFIED),
        (DeviceStateError("x", code="device.busy"), DeviceStateError, 0x6985),
        (InsufficientFunds("x"), InsufficientFunds, SW.CONDITIONS_NOT_SATISFIED),
        (NotFound("x"), NotFound, SW.CONDITIONS_NOT_SATISFIED),
        (OffpayError("x", code="seal.invalid"), SealError, SW.SECURITY_NOT_SATISFIED),
    ],
    ids=lambda v: getattr(v, "code", None) if isinstance(v, OffpayError) else None,
)
def test_typed_errors_cross_the_card_interface(error: OffpayError, cls: type, sw: int) -> None:
    response = Response.from_bytes(error_response(error).to_bytes())
    assert response.sw == status_for(error) == sw
    with pytest.raises(OffpayError) as exc:
        raise_for(response)
    assert type(exc.value) is cls
    assert exc.value.code == error.code
    assert exc.value.message == error.message


def test_revocation_keeps_its_class_across_the_card_interface() -> None:
    """errors.py promises a relay re-raises the same typed error. A revoked certificate is a
    CertificateError with code crypto.revoked; on the reader's side it must still be one."""
    error = CertificateError("card:x is revoked", code="crypto.revoked")
    with pytest.raises(OffpayError) as exc:
        raise_for(error_response(error))
    assert exc.value.code == "crypto.revoked"
    assert isinstance(exc.value, CertificateError)


def test_unreadable_error_body_becomes_device_failure() -> None:
    with pytest.raises(OffpayError) as exc:
        raise_for(Response(b"\xff\x00", SW.UNKNOWN))
    assert exc.value.code == "device.failure"
    assert raise_for(Response(b"ok", SW.OK)) == b"ok"


@pytest.mark.parametrize(
    ("raw", "data", "le"),
    [
        (b"\x80\xc6\x00\x00\x00", b"", 256),  # case 2 short, Le 0 = up to 256
        (b"\x80\xc6\x00\x00\x10", b"", 16),  # case 2 short
        (b"\x80\xd0\x00\x00\x02ab\x00", b"ab", 256),  # case 4 short
        (b"\x80\xc6\x00\x00\x00\x01\x00", b"", 256),  # case 2 extended
        (b"\x80\xd0\x00\x00\x00\x00\x02ab\x00\x00", b"ab", 65536),  # case 4 extended
    ],
)
def test_commands_with_an_expected_length_are_understood(raw: bytes, data: bytes, le: int) -> None:
    """Readers send ISO cases 2 and 4 (with Le); the card must parse them, not refuse them."""
    cmd = Command.from_bytes(raw)
    assert (cmd.data, cmd.le) == (data, le)


@given(st.binary(max_size=70000), st.one_of(st.none(), st.integers(1, 65536)))
@settings(deadline=None, max_examples=60)
def test_command_round_trip_with_le(data: bytes, le: int | None) -> None:
    if len(data) > 0xFFFF:
        return
    cmd = Command(0x80, 0xD0, 1, 2, data, le)
    assert Command.from_bytes(cmd.to_bytes()) == cmd


def test_a_full_ml_dsa_log_travels_by_response_chaining() -> None:
    """Five ML-DSA-signed payments make a card session larger than one extended APDU
    (65 536 bytes); the card answers in pieces (61xx, GET RESPONSE) and the sync completes."""
    from offpay.device.apdu import MAX_RESPONSE, SW, Command, Ins, Response
    from offpay.wire.messages import Operation, SessionStart

    net = OfflineNetwork(algorithm=Algorithm.ML_DSA_65)
    net.issue("bank-a", 10_000_00)
    alice = net.add_user("Alice", "bank-a", online=1_000_00)
    shop = net.add_merchant("Shop", "bank-a")
    alice.phone.top_up(alice.pin, net.money(500_00))
    for _ in range(5):
        shop.pos.charge(alice.card.process, alice.pin, net.money(1_00))
    CardClient(alice.card.process).verify_pin(alice.pin)
    start = encode(SessionStart("bank-a/engine", Operation.SYNC, net.money(0)))
    first = Response.from_bytes(
        alice.card.process(Command(0x80, Ins.BEGIN_ONLINE, 0, 0, start).to_bytes())
    )
    assert first.sw & 0xFF00 == SW.MORE_DATA
    assert len(first.data) == MAX_RESPONSE
    status = alice.phone.sync(alice.pin)
    assert status.offline_transactions == 0
    assert alice.card_balance == alice.shadow == net.money(495_00)
    net.check_conservation()
