"""The token scheme (FEDS 2025-105, "Implementation", "Offline Token Lifecycle" and "Offline
Token Transfer Protocol"): the token's fields and canonical encoding, history verification,
the secure element's KeyGen, SignOnce and token store, the lifecycle from withdrawal (mint) to
deposit (redeem) with money conservation checked after every step, the three-phase offline
transfer protocol, and the renewal of long ancestries at an online moment.

Attacks on the scheme (double spending, counterfeits, revocation) are in
``test_token_attacks.py``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from conftest import pay_tokens as pay
from conftest import refused
from offpay.crypto.keys import verify_signature
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.store import schema
from offpay.tokens.messages import RedeemRequest
from offpay.tokens.model import (
    ENDORSE_DOMAIN,
    Address,
    Endorsement,
    Token,
    TokenBody,
    encode_body,
    mint_digest,
    transition_digest,
)
from offpay.tokens.transfer import (
    Confirmation,
    Hello,
    Offer,
    ReceiverSession,
    SenderSession,
)
from offpay.wire.codec import decode, encode
from offpay.wire.envelope import Signed, sign

if TYPE_CHECKING:
    from conftest import Checked

SEK = 100  # minor units per krona
ISSUED = 1_000_000_00


def owner_key(token: Token) -> Ed25519PublicKey:
    key = load_der_public_key(token.owner)
    assert isinstance(key, Ed25519PublicKey)
    return key


def discover(sender: SenderSession, receiver: ReceiverSession) -> None:
    """Phase 1 with a perfect relay: hellos, the users compare codes, proofs."""
    s_proof, r_proof = sender.on_hello(receiver.hello()), receiver.on_hello(sender.hello())
    sender.on_proof(r_proof)
    receiver.on_proof(s_proof)
    assert sender.code == receiver.code != ""
    sender.users_agree(receiver.code)
    receiver.users_agree(sender.code)


def pass_back_and_forth(a: TokenUser, b: TokenUser, token: Token, hops: int) -> Token:
    """Hand a whole token from ``a`` to ``b`` and back, ``hops`` times (KeyGen, SignOnce, store);
    returns the last token, held by ``b`` if ``hops`` is odd."""
    for _ in range(hops):
        child = a.element.transfer(token.id, b.element.keygen())
        b.element.store(child)
        token, a, b = child, b, a
    return token


# --- the token's fields and encoding (FEDS 2025-105, "Representing an Offline Token") ------------


def test_minted_token_carries_id_value_owner_endorsement_and_mint_proof(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    token = checked.step(ann.app.withdraw, net.money(300 * SEK))

    assert len(token.id) == 16
    assert token.value == net.money(300 * SEK)
    # The owner is a fresh ownership key, not the element's own key.
    assert owner_key(token).public_bytes_raw() != ann.element.signer.public_key.public_bytes_raw()
    # The endorsement: the element that generated the owner key, its chain, its signature.
    assert token.endorsement.element == ann.element_id
    assert token.endorsement.chain == ann.element.chain
    verify_signature(
        ann.element.signer.public_key, token.endorsement.signature, ENDORSE_DOMAIN + token.owner
    )
    # A root: one proof, by the central bank's minting key over the body; no history.
    assert token.is_root
    assert token.ancestors == () and token.siblings == ()
    assert len(token.proof) == 1
    verify_signature(
        net.central.mint.credential.signer.public_key, token.proof[0], mint_digest(token.body)
    )
    assert token.body == TokenBody(token.id, token.value, token.owner, token.endorsement)
    assert token.address == Address(token.owner, token.endorsement)
    assert ann.element.tokens() == [token]


def test_split_and_transfer_link_each_child_to_its_parent_and_siblings(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(300 * SEK))

    wanted, change = checked.step(ann.element.split, root.id, net.money(120 * SEK))
    assert (wanted.value, change.value) == (net.money(120 * SEK), net.money(180 * SEK))
    assert wanted.ancestors == change.ancestors == (root,)
    assert wanted.siblings == (change.body,) and change.siblings == (wanted.body,)
    # One transition, signed once by the parent's owner key; both children carry that proof.
    assert wanted.proof == change.proof
    split_digest = transition_digest([root.id], [wanted.body, change.body])
    verify_signature(owner_key(root), wanted.proof[0], split_digest)
    assert wanted.id != change.id != root.id
    assert wanted.endorsement.element == change.endorsement.element == ann.element_id

    child = checked.step(pay, ann, ben, 120 * SEK)
    assert child.value == wanted.value
    assert child.ancestors == (wanted,)
    assert child.siblings == ()
    assert child.endorsement.element == ben.element_id
    verify_signature(
        owner_key(wanted), child.proof[0], transition_digest([wanted.id], [child.body])
    )
    assert ann.element.tokens() == [change]
    assert ben.element.tokens() == [child]


def test_token_encoding_round_trips_and_is_canonical(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    child = checked.step(pay, ann, ben, 120 * SEK)  # a history with a split and a transfer

    data = encode(child)
    back = decode(data, Token)
    assert back == child
    assert encode(back) == data
    assert back.ancestors[0].siblings == child.ancestors[0].siblings
    assert ben.element.verify(back).length == 2
    refused("wire.malformed", decode, data, TokenBody)  # another message type
    refused("wire.malformed", decode, data + b"\x00", Token)  # trailing bytes


def _endorsements() -> st.SearchStrategy[Endorsement]:
    return st.builds(
        Endorsement,
        st.text(max_size=24),
        st.lists(st.binary(max_size=48), max_size=2).map(tuple),
        st.binary(max_size=64),
    )


_money = st.builds(Money, st.integers(1, 2**63 - 1), st.sampled_from(["SEK", "EUR", "JPY"]))
_bodies = st.builds(
    TokenBody, st.binary(min_size=16, max_size=16), _money, st.binary(max_size=44), _endorsements()
)


def _tokens(ancestors: st.SearchStrategy[tuple[Token, ...]]) -> st.SearchStrategy[Token]:
    return st.builds(
        Token,
        st.binary(min_size=16, max_size=16),
        _money,
        st.binary(max_size=44),
        _endorsements(),
        st.lists(st.binary(max_size=64), max_size=3).map(tuple),
        ancestors,
        st.lists(_bodies, max_size=2).map(tuple),
    )


_any_tokens = st.recursive(
    _tokens(st.just(())),
    lambda inner: _tokens(st.lists(inner, min_size=1, max_size=3).map(tuple)),
    max_leaves=6,
)


@settings(max_examples=30, deadline=None)
@given(_any_tokens)
def test_any_token_round_trips_through_the_canonical_encoding(token: Token):
    data = encode(token)
    back = decode(data, Token)
    assert back == token
    assert encode(back) == data
    assert back.body == token.body and back.address == token.address


@settings(max_examples=50, deadline=None)
@given(_any_tokens)
def test_the_verifiers_body_encoding_is_the_canonical_encoding(token: Token):
    """encode_body is what the verifier hashes and signers sign: byte for byte ``encode``."""
    assert encode_body(token) == encode_body(token.body) == encode(token.body)
    for sibling in token.siblings:
        assert encode_body(sibling) == encode(sibling)


# --- history verification (FEDS 2025-105, "Double-spending" and "Counterfeiting") ---------------


def test_minted_token_verifies_with_an_empty_history(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    token = checked.step(ann.app.withdraw, net.money(100 * SEK))
    for verifier in (ann.element, ben.element, net.central.mint.verifier):
        history = verifier.verify(token)
        assert history.length == 0
        assert history.consumed == {} and history.endorsers == {}


def test_chain_of_transfers_verifies_back_to_the_minted_root(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-a")
    root = checked.step(ann.app.withdraw, net.money(100 * SEK))
    to_ben = checked.step(pay, ann, ben, 100 * SEK)
    to_cat = checked.step(pay, ben, cat, 100 * SEK)

    # The ancestor chain leads to the minted root, each link signed by the previous owner.
    assert to_cat.ancestors == (to_ben,) and to_ben.ancestors == (root,) and root.is_root
    history = cat.element.verify(to_cat)
    assert history.length == 2
    assert set(history.consumed) == {root.id, to_ben.id}
    assert history.consumed[root.id] == transition_digest([root.id], [to_ben.body])
    assert history.consumed[to_ben.id] == transition_digest([to_ben.id], [to_cat.body])
    assert history.endorsers == {root.id: ann.element_id, to_ben.id: ben.element_id}
    # Any element, and the central bank, verify the same history offline.
    assert ann.element.verify(to_cat) == history
    assert net.central.mint.verifier.verify(to_cat) == history


def test_split_siblings_sum_to_the_parent_and_a_raised_sibling_is_refused(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    root = checked.step(ann.app.withdraw, net.money(300 * SEK))
    wanted, change = ann.element.split(root.id, net.money(120 * SEK))
    assert wanted.value + change.value == root.value
    assert ann.element.verify(wanted).length == ann.element.verify(change).length == 1

    raised_sibling = replace(wanted, siblings=(replace(change.body, value=net.money(181 * SEK)),))
    refused("token.value_mismatch", ann.element.verify, raised_sibling)
    lowered_sibling = replace(wanted, siblings=(replace(change.body, value=net.money(100 * SEK)),))
    refused("token.value_mismatch", ann.element.verify, lowered_sibling)
    # Moving value from the sibling to the token keeps the sum but not the derived ids (and
    # not the parent's signature).
    shifted = replace(
        wanted,
        value=net.money(200 * SEK),
        siblings=(replace(change.body, value=net.money(100 * SEK)),),
    )
    refused("token.bad_id", ann.element.verify, shifted)
    no_sibling = replace(wanted, siblings=())
    refused("token.value_mismatch", ann.element.verify, no_sibling)


def test_merge_of_split_halves_reaches_one_ancestor_twice_and_verifies(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(300 * SEK))
    wanted, change = checked.step(ann.element.split, root.id, net.money(120 * SEK))
    merged = checked.step(ann.element.merge, [wanted.id, change.id])

    assert merged.value == root.value
    assert merged.ancestors == (wanted, change)
    assert len(merged.proof) == 2  # one SignOnce per parent
    history = ann.element.verify(merged)
    assert set(history.consumed) == {root.id, wanted.id, change.id}
    assert history.length == 3
    # Both halves name the same consuming transition of the root: no double spend.
    assert history.consumed[root.id] == transition_digest([root.id], [wanted.body, change.body])
    # The merged token travels and verifies at the receiver too.
    to_ben = checked.step(pay, ann, ben, 300 * SEK)
    assert to_ben.ancestors == (merged,)
    assert ben.element.verify(to_ben).length == 4


def test_history_length_counts_the_ancestors(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    token = checked.step(ann.app.withdraw, net.money(50 * SEK))
    lengths = [ann.element.verify(token).length]
    a, b = ann, ben
    for _ in range(4):
        token = checked.step(pay, a, b, 50 * SEK)
        lengths.append(b.element.verify(token).length)
        a, b = b, a
    assert lengths == [0, 1, 2, 3, 4]

    def count(t: Token, seen: set[bytes]) -> set[bytes]:
        for parent in t.ancestors:
            seen.add(parent.id)
            count(parent, seen)
        return seen

    assert len(count(token, set())) == 4


# --- the secure element: KeyGen, SignOnce, the token store (FEDS 2025-105, "Offline Applet") -----


def test_keygen_endorses_a_fresh_ownership_key(net: OfflineNetwork):
    ann = net.add_token_user("Ann", "bank-a")
    ben = net.add_token_user("Ben", "bank-b")
    first, second = ann.element.keygen(), ann.element.keygen()
    assert first.owner != second.owner
    for address in (first, second):
        assert address.endorsement.element == ann.element_id
        assert address.endorsement.chain == ann.element.chain
        verify_signature(
            ann.element.signer.public_key,
            address.endorsement.signature,
            ENDORSE_DOMAIN + address.owner,
        )
        assert isinstance(load_der_public_key(address.owner), Ed25519PublicKey)
        # Another bank's element accepts it as an issuer-endorsed address.
        ben.element.verifier.check_address(address)  # type: ignore[union-attr]
    # An endorsement belongs to its key only.
    swapped = Address(first.owner, second.endorsement)
    refused("token.bad_endorsement", ben.element.verifier.check_address, swapped)  # type: ignore[union-attr]


def test_sign_once_signs_once_and_destroys_the_key(net: OfflineNetwork):
    ann = net.add_token_user("Ann", "bank-a")
    address = ann.element.keygen()
    digest = os.urandom(32)
    signature = ann.element.sign_once(address.owner, digest)
    verify_signature(load_der_public_key(address.owner), signature, digest)  # type: ignore[arg-type]
    refused("token.key_used", ann.element.sign_once, address.owner, digest)
    refused("token.key_used", ann.element.sign_once, address.owner, os.urandom(32))
    refused("token.key_used", ann.element.sign_once, os.urandom(44), digest)  # never generated


def test_spent_token_cannot_be_spent_again_by_the_element(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-b")
    token = checked.step(ann.app.withdraw, net.money(100 * SEK))
    checked.step(ann.element.transfer, token.id, ben.element.keygen())
    refused("token.unknown", ann.element.transfer, token.id, cat.element.keygen())
    refused("token.key_used", ann.element.sign_once, token.owner, os.urandom(32))
    assert ann.element.tokens() == []
    checked.conserved()


def test_split_merge_and_select_keep_the_wallet_balance(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    checked.step(ann.app.withdraw, net.money(50 * SEK))
    checked.step(ann.app.withdraw, net.money(30 * SEK))
    balance = net.money(80 * SEK)
    el = ann.element
    assert el.balance() == balance

    picked = checked.step(el.select, net.money(30 * SEK))  # an exact token: no change needed
    assert picked.is_root and el.balance() == balance
    picked = checked.step(el.select, net.money(70 * SEK))  # merge 50 + 30, split off 70
    assert picked.value == net.money(70 * SEK)
    assert el.balance() == balance
    assert sorted(t.value.minor for t in el.tokens()) == [10 * SEK, 70 * SEK]
    for t in el.tokens():
        assert el.verify(t).length == 3  # the two roots and the merged token
    merged = checked.step(el.merge, [t.id for t in el.tokens()])
    assert merged.value == balance and el.tokens() == [merged]

    refused("token.bad_split", el.split, merged.id, balance)
    refused("token.bad_split", el.split, merged.id, net.money(0))
    refused("token.bad_merge", el.merge, [merged.id, merged.id])
    refused("token.unknown", el.merge, [merged.id, os.urandom(16)])
    refused("token.bad_amount", el.select, net.money(0))
    refused("funds.insufficient", el.select, net.money(81 * SEK))
    assert el.tokens() == [merged] and el.balance() == balance


@pytest.fixture(scope="module")
def wallet() -> tuple[OfflineNetwork, TokenUser]:
    """One network for all examples of the property test below (each example empties it)."""
    n = OfflineNetwork()
    for name in n.banks:
        n.issue(name, ISSUED)
    return n, n.add_token_user("Wally", "bank-a", online=10_000 * SEK)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), value=st.integers(2, 50_000))
def test_split_merge_select_keep_the_balance_for_any_amounts(
    wallet: tuple[OfflineNetwork, TokenUser], data: st.DataObject, value: int
):
    n, wally = wallet
    el = wally.element
    online = wally.online
    token = wally.app.withdraw(n.money(value))
    total = n.money(value)
    cut = data.draw(st.integers(1, value - 1), label="cut")
    want = data.draw(st.integers(1, value), label="want")

    first, second = el.split(token.id, n.money(cut))
    assert first.value + second.value == total and el.balance() == total
    merged = el.merge([first.id, second.id])
    assert merged.value == total and el.balance() == total
    picked = el.select(n.money(want))
    assert picked.value == n.money(want) and el.balance() == total
    for t in el.tokens():
        el.verify(t)
    n.check_conservation()

    wally.app.deposit(total)
    assert el.balance() == n.money(0) and wally.online == online
    assert n.check_conservation().tokens == n.money(0)


def test_store_refuses_tokens_not_owned_by_the_element(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    token = checked.step(ann.app.withdraw, net.money(100 * SEK))
    refused("token.not_ours", ben.element.store, token)
    refused("token.duplicate", ann.element.store, token)
    sent = checked.step(ann.element.transfer, token.id, ben.element.keygen())
    refused("token.not_ours", ann.element.store, sent)  # Ben's key, not Ann's
    refused("token.not_ours", ann.element.store, token)  # spent: its key is gone
    assert ann.element.tokens() == [] and ben.element.tokens() == []
    ben.element.store(sent)
    assert ben.element.tokens() == [sent]


# --- the lifecycle (FEDS 2025-105, "Offline Token Lifecycle", Figure 6) --------------------------


def test_withdraw_mints_a_token_and_debits_the_online_wallet(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    assert net.central.mint.outstanding() == net.money(0)
    token = checked.step(ann.app.withdraw, net.money(300 * SEK))
    assert ann.online == net.money(700 * SEK)
    assert ann.tokens == net.money(300 * SEK)
    assert net.central.mint.outstanding() == net.money(300 * SEK)
    with net.central.db.connect() as conn:
        minted = conn.execute(select(schema.minted.c.id, schema.minted.c.value)).all()
    assert [(bytes(i), v) for i, v in minted] == [(token.id, 300 * SEK)]

    checked.step(ann.app.withdraw, net.money(200 * SEK))
    assert ann.online == net.money(500 * SEK)
    assert net.central.mint.outstanding() == net.money(500 * SEK)

    refused("funds.insufficient", checked.step, ann.app.withdraw, net.money(501 * SEK))
    assert ann.online == net.money(500 * SEK) and ann.tokens == net.money(500 * SEK)
    assert net.central.mint.outstanding() == net.money(500 * SEK)


def test_deposit_redeems_tokens_and_credits_the_online_wallet(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    checked.step(ann.app.deposit, net.money(100 * SEK))  # split for change, then deposit
    assert ann.online == net.money(800 * SEK)
    assert ann.tokens == net.money(200 * SEK)
    assert net.central.mint.outstanding() == net.money(200 * SEK)
    checked.step(ann.app.deposit, net.money(200 * SEK))
    assert ann.online == net.money(1000 * SEK)
    assert ann.tokens == net.money(0) and ann.element.tokens() == []
    assert net.central.mint.outstanding() == net.money(0)
    # The bank's vault burned what it redeemed.
    assert ann.bank.tokens.vault.tokens() == []  # type: ignore[union-attr]
    refused("funds.insufficient", checked.step, ann.app.deposit, net.money(1))


def test_redeem_records_the_token_and_refuses_it_a_second_time(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    redeems: list[bytes] = []

    def tap(to: str, kind: str, data: bytes) -> bytes:
        if kind == "redeem-token":
            redeems.append(data)
        return data

    net.network.taps.append(tap)
    checked.step(ann.app.deposit, net.money(100 * SEK))
    net.network.taps.remove(tap)
    assert len(redeems) == 1
    request = decode(Signed.from_bytes(redeems[0]).payload, RedeemRequest)
    with net.central.db.connect() as conn:
        redeemed = conn.execute(select(schema.redeemed.c.id, schema.redeemed.c.value)).all()
        consumed = {bytes(i) for i in conn.execute(select(schema.consumed.c.id)).scalars()}
    assert [(bytes(i), v) for i, v in redeemed] == [(request.token.id, 100 * SEK)]
    assert consumed == {request.token.id, *net.central.mint.verifier.verify(request.token).consumed}
    assert net.central.mint.outstanding() == net.money(0)

    # The same request again: the recorded answer, nothing credited twice.
    first = net.network.send("central-bank", "redeem-token", redeems[0])
    assert net.network.send("central-bank", "redeem-token", redeems[0]) == first
    checked.conserved()
    # The same token in a new request: refused.
    again = replace(request, nonce=os.urandom(16))
    data = sign(again, ann.bank.credential).to_bytes()
    refused("token.redeemed", checked.step, net.network.send, "central-bank", "redeem-token", data)
    assert net.central.mint.outstanding() == net.money(0)
    assert ann.online == net.money(1000 * SEK)


def test_offline_transfer_between_banks_needs_no_network(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    messages = net.network.messages
    token = checked.step(pay, ann, ben, 120 * SEK)
    assert net.network.messages == messages  # nothing went online
    assert ann.tokens == net.money(180 * SEK) and ben.tokens == net.money(120 * SEK)
    assert (ann.online, ben.online) == (net.money(700 * SEK), net.money(0))
    assert net.central.mint.outstanding() == net.money(300 * SEK)
    assert token.endorsement.element == ben.element_id
    assert ben.element.verify(token).length == 2  # Ann's split, then the transfer

    checked.step(ben.app.deposit, net.money(120 * SEK))  # at Ben's bank, not Ann's
    assert ben.online == net.money(120 * SEK) and ben.tokens == net.money(0)
    assert net.central.mint.outstanding() == net.money(180 * SEK)


def test_split_and_merge_make_change_along_the_way(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-b")
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    checked.step(pay, ann, ben, 120 * SEK)  # Ann keeps 180 in change
    checked.step(pay, ben, ann, 50 * SEK)  # Ben keeps 70
    assert sorted(t.value.minor for t in ann.element.tokens()) == [50 * SEK, 180 * SEK]
    to_cat = checked.step(pay, ann, cat, 200 * SEK)  # merge 180 + 50, split off 200
    assert [t.value.minor for t in ann.element.tokens()] == [30 * SEK]
    assert [t.value.minor for t in ben.element.tokens()] == [70 * SEK]
    (merged,) = to_cat.ancestors[0].ancestors  # the 200 was split from the merge
    assert len(merged.ancestors) == 2
    assert sorted(p.value.minor for p in merged.ancestors) == [50 * SEK, 180 * SEK]
    assert cat.element.verify(to_cat).length == 8
    total = ann.tokens + ben.tokens + cat.tokens
    assert total == net.money(300 * SEK) == net.central.mint.outstanding()


def test_chain_of_five_transfers_then_deposit(net: OfflineNetwork, checked: Checked):
    """A withdraws; A→B→C→D→E offline, across both banks; E deposits (its element signs the
    token over to the bank's vault: the fifth transfer) and is credited online."""
    users = [
        net.add_token_user(name, bank, online=100 * SEK if name == "A" else 0)
        for name, bank in (("A", "bank-a"), ("B", "bank-b"), ("C", "bank-a"), ("D", "bank-b"))
    ]
    users.append(net.add_token_user("E", "bank-a"))
    checked.step(users[0].app.withdraw, net.money(100 * SEK))
    for hop, (a, b) in enumerate(itertools.pairwise(users), start=1):
        token = checked.step(pay, a, b, 100 * SEK)
        assert b.element.verify(token).length == hop
        assert a.tokens == net.money(0) and b.tokens == net.money(100 * SEK)
        assert net.central.mint.outstanding() == net.money(100 * SEK)
    e = users[-1]
    checked.step(e.app.deposit, net.money(100 * SEK))
    assert e.online == net.money(100 * SEK) and e.tokens == net.money(0)
    assert users[0].online == net.money(0)
    assert net.central.mint.outstanding() == net.money(0)


# --- the three-phase transfer protocol (FEDS 2025-105, Figure 7) ---------------------------------


def test_both_users_see_the_same_six_digit_code(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    s = SenderSession(ann.element, net.money(100 * SEK))
    r = ReceiverSession(ben.element, net.money(100 * SEK))
    discover(s, r)
    assert len(s.code) == 6 and s.code.isdigit()
    assert s.session == r.session
    address = r.on_offer(s.offer())
    r_conf = r.on_transfer(s.on_address(address))
    s.on_confirmation(r_conf)
    assert s.confirmed and r.received is not None
    assert ben.element.tokens() == [r.received]
    checked.conserved()


def test_a_third_element_relaying_in_the_middle_makes_the_codes_differ(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    mal = net.add_token_user("Mal", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    amount = net.money(100 * SEK)
    s = SenderSession(ann.element, amount)
    r = ReceiverSession(ben.element, amount)
    to_ann, to_ben = ReceiverSession(mal.element, amount), SenderSession(mal.element, amount)
    # Each honest party receives the relay's hello instead of the other's.
    s_proof, relay_to_ann = s.on_hello(to_ann.hello()), to_ann.on_hello(s.hello())
    r_proof, relay_to_ben = r.on_hello(to_ben.hello()), to_ben.on_hello(r.hello())
    s.on_proof(relay_to_ann)
    r.on_proof(relay_to_ben)
    to_ann.on_proof(s_proof)
    to_ben.on_proof(r_proof)
    assert s.code != r.code  # the users compare codes and abort
    assert s.peer is not None and s.peer.id == mal.element_id
    assert ann.tokens == amount and ben.tokens == net.money(0)


def test_a_relay_that_changes_a_nonce_is_noticed(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    amount = net.money(100 * SEK)
    s, r = SenderSession(ann.element, amount), ReceiverSession(ben.element, amount)
    hello = decode(r.hello(), Hello)
    forged = encode(replace(hello, commitment=os.urandom(32)))
    s_proof, r_proof = s.on_hello(forged), r.on_hello(s.hello())
    refused("wire.replay", s.on_proof, r_proof)
    refused("wire.replay", r.on_proof, s_proof)
    refused("device.state", s.offer)  # nothing proceeds without a proved peer
    assert ann.tokens == amount


def test_an_offer_of_the_wrong_amount_is_refused(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    s = SenderSession(ann.element, net.money(100 * SEK))
    r = ReceiverSession(ben.element, net.money(120 * SEK))
    discover(s, r)
    offer = s.offer()
    refused("token.wrong_amount", r.on_offer, offer)
    assert r.address is None and r.offered is None
    assert ann.tokens == net.money(300 * SEK)  # split for the offer, nothing left the wallet
    assert ben.tokens == net.money(0)
    checked.conserved()


def test_sender_accepts_only_the_receivers_real_confirmation_code(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    s = SenderSession(ann.element, net.money(100 * SEK))
    r = ReceiverSession(ben.element, net.money(100 * SEK))
    discover(s, r)
    real = r.on_transfer(s.on_address(r.on_offer(s.offer())))

    code = decode(Signed.from_bytes(real).payload, Confirmation).code
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    fake = Confirmation(ben.element_id, ann.element_id, r.session, wrong)
    refused("token.unconfirmed", s.on_confirmation, sign(fake, ben.element.credential).to_bytes())
    assert not s.confirmed
    s.on_confirmation(real)
    assert s.confirmed
    checked.conserved()


def test_a_lost_transfer_is_resent_and_stored_once(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    s = SenderSession(ann.element, net.money(100 * SEK))
    r = ReceiverSession(ben.element, net.money(100 * SEK))
    discover(s, r)
    s.on_address(r.on_offer(s.offer()))  # SignOnce done; the message is lost
    assert ann.tokens == net.money(0) and ben.tokens == net.money(0)
    refused("token.key_used", ann.element.sign_once, s.offered.owner, os.urandom(32))  # type: ignore[union-attr]
    checked.conserved()  # the token is in flight: still outstanding at the mint

    resent = s.resend()
    first = r.on_transfer(resent)
    second = r.on_transfer(resent)
    third = r.on_transfer(s.resend())
    assert first == second == third
    assert ben.element.tokens() == [r.received]
    assert ben.tokens == net.money(100 * SEK)
    s.on_confirmation(first)
    assert s.confirmed
    checked.conserved()


def test_messages_addressed_to_another_element_are_refused(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    amount = net.money(100 * SEK)
    to_ben, ben_r = SenderSession(ann.element, amount), ReceiverSession(ben.element, amount)
    to_cat, cat_r = SenderSession(ann.element, amount), ReceiverSession(cat.element, amount)
    discover(to_ben, ben_r)
    discover(to_cat, cat_r)
    offer_to_ben = to_ben.offer()
    refused("wire.wrong_receiver", cat_r.on_offer, offer_to_ben)
    assert cat_r.address is None
    # Ann's proof of discovery made for Ben does not open a session with Cat either.
    ann_s, cat_r2 = SenderSession(ann.element, amount), ReceiverSession(cat.element, amount)
    cat_r2.on_hello(ann_s.hello())
    proof_for_ben = ann_s.on_hello(ReceiverSession(ben.element, amount).hello())
    refused("wire.wrong_receiver", cat_r2.on_proof, proof_for_ben)
    assert not cat_r2.peer_proved
    # The right receiver still takes it.
    ben_r.on_transfer(to_ben.on_address(ben_r.on_offer(offer_to_ben)))
    assert ben.tokens == amount and cat.tokens == net.money(0)
    checked.conserved()


def test_a_transfer_replayed_from_an_old_session_is_refused(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    amount = net.money(50 * SEK)
    s1, r1 = SenderSession(ann.element, amount), ReceiverSession(ben.element, amount)
    discover(s1, r1)
    old_transfer = s1.on_address(r1.on_offer(s1.offer()))
    s1.on_confirmation(r1.on_transfer(old_transfer))
    assert ben.tokens == amount

    s2, r2 = SenderSession(ann.element, amount), ReceiverSession(ben.element, amount)
    discover(s2, r2)
    address = r2.on_offer(s2.offer())
    refused("wire.replay", r2.on_transfer, old_transfer)
    # An old offer is no good either.
    old_offer = Offer(ann.element_id, ben.element_id, s1.session, r1.offered)  # type: ignore[arg-type]
    refused("wire.replay", r2.on_offer, sign(old_offer, ann.element.credential).to_bytes())
    assert ben.tokens == amount and len(ben.element.tokens()) == 1
    s2.on_confirmation(r2.on_transfer(s2.on_address(address)))
    assert ben.tokens == amount + amount
    checked.conserved()


# --- long ancestries (FEDS 2025-105, "Ancestor Token(s)", the renewal beyond 30) -----------------


def test_a_history_longer_than_30_is_replaced_by_a_fresh_minted_token(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(10 * SEK))
    long = checked.step(pass_back_and_forth, ann, ben, root, 31)
    assert ben.element.tokens() == [long]
    assert ben.element.verify(long).length == 31
    online = (ann.online, ben.online)

    (fresh,) = checked.step(ben.app.renew_long)
    assert fresh.is_root and fresh.ancestors == () and fresh.siblings == ()
    assert fresh.value == long.value == root.value
    assert fresh.id != long.id
    assert fresh.endorsement.element == ben.element_id
    assert ben.element.tokens() == [fresh]
    assert ben.element.verify(fresh).length == 0
    assert (ann.online, ben.online) == online
    assert net.central.mint.outstanding() == net.money(10 * SEK)
    assert checked.step(ben.app.renew_long) == []


def test_a_history_of_30_is_kept(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(10 * SEK))
    token = checked.step(pass_back_and_forth, ann, ben, root, 30)
    assert ann.element.verify(token).length == 30
    assert checked.step(ann.app.renew_long) == []
    assert ann.element.tokens() == [token]


@pytest.mark.parametrize("moment", ["withdraw", "deposit"])
def test_the_next_online_moment_renews_a_long_history(
    net: OfflineNetwork, checked: Checked, moment: str
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b", online=100 * SEK)
    checked.step(ben.app.withdraw, net.money(5 * SEK))
    root = checked.step(ann.app.withdraw, net.money(10 * SEK))
    long = checked.step(pass_back_and_forth, ann, ben, root, 33)
    assert sorted(t.value.minor for t in ben.element.tokens()) == [5 * SEK, 10 * SEK]

    if moment == "withdraw":
        checked.step(ben.app.withdraw, net.money(1 * SEK))
        expected = [1 * SEK, 5 * SEK, 10 * SEK]
        online = net.money(94 * SEK)
    else:
        checked.step(ben.app.deposit, net.money(5 * SEK))  # the small token, exactly
        expected = [10 * SEK]
        online = net.money(100 * SEK)
    assert sorted(t.value.minor for t in ben.element.tokens()) == expected
    assert all(t.is_root for t in ben.element.tokens())
    assert long.id not in {t.id for t in ben.element.tokens()}
    assert ben.online == online
    assert net.central.mint.outstanding() == net.money(sum(expected))


# --- cut connections at online moments ----------------------------------------------------------


def _cut_once(net: OfflineNetwork, kind: str, *, after: bool) -> None:
    """Drop one message of ``kind``: before it is handled, or after (the answer is lost)."""
    state = {"done": False}
    real = net.network.send

    def send(to: str, k: str, data: bytes) -> bytes:
        if k == kind and not state["done"]:
            state["done"] = True
            if after:
                real(to, k, data)
            raise OffpayError("connection lost", code="network.cut")
        return real(to, k, data)

    net.network.send = send  # type: ignore[method-assign]


@pytest.mark.parametrize("kind", ["token-withdraw", "mint-token"])
@pytest.mark.parametrize("after", [False, True])
def test_a_cut_withdrawal_completes_once_when_retried(
    net: OfflineNetwork, checked: Checked, kind: str, after: bool
) -> None:
    ann = net.add_token_user("Ann", "bank-a", online=100 * SEK)
    _cut_once(net, kind, after=after)
    with pytest.raises(OffpayError):
        ann.app.withdraw(net.money(30 * SEK))
    checked.conserved()
    ann.app.retry_pending()
    ann.app.retry_pending()
    assert ann.tokens == net.money(30 * SEK)
    assert ann.online == net.money(70 * SEK)
    assert net.central.mint.outstanding() == net.money(30 * SEK)
    checked.conserved()


@pytest.mark.parametrize("kind", ["token-deposit", "redeem-token"])
@pytest.mark.parametrize("after", [False, True])
def test_a_cut_deposit_completes_once_when_retried(
    net: OfflineNetwork, checked: Checked, kind: str, after: bool
) -> None:
    ann = net.add_token_user("Ann", "bank-a", online=100 * SEK)
    checked.step(ann.app.withdraw, net.money(30 * SEK))
    _cut_once(net, kind, after=after)
    with pytest.raises(OffpayError):
        ann.app.deposit(net.money(30 * SEK))
    checked.conserved()
    ann.app.retry_pending()
    ann.app.retry_pending()
    assert ann.tokens == net.money(0)
    assert ann.online == net.money(100 * SEK)
    assert net.central.mint.outstanding() == net.money(0)
    checked.conserved()


def test_nothing_moves_before_the_users_confirm_matching_codes(
    net: OfflineNetwork, checked: Checked
) -> None:
    ann = net.add_token_user("Ann", "bank-a", online=100 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(30 * SEK))
    amount = net.money(30 * SEK)
    s, r = SenderSession(ann.element, amount), ReceiverSession(ben.element, amount)
    s_proof, r_proof = s.on_hello(r.hello()), r.on_hello(s.hello())
    s.on_proof(r_proof)
    r.on_proof(s_proof)
    refused("device.state", s.offer)  # proved, but the users have not compared yet
    wrong = f"{(int(r.code) + 1) % 1_000_000:06d}"
    refused("token.code_mismatch", s.users_agree, wrong)
    refused("device.state", s.offer)
    s.users_agree(r.code)
    r.users_agree(s.code)
    r.on_offer(s.offer())
    assert ann.tokens == amount  # offered, not yet transferred
