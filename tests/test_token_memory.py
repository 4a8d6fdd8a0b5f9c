"""The verifier's memory of verified signatures (tokens/verify.py): a token that comes back,
or the token of phase 3 of a transfer, costs only its new hops' signatures, and nothing else
is skipped. A verifier that remembers must answer exactly as a fresh one: the same history
for a genuine token, the same refusal for a tampered one, a forked one (double spend), one
whose owner's element was revoked since, and a new token built on a remembered history.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import pay_tokens as pay
from conftest import refused
from offpay.bench.instrument import count_crypto
from offpay.crypto.keys import Signer
from offpay.errors import DoubleSpend, OffpayError
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token, TokenBody, child_id, transition_digest
from offpay.tokens.verify import TokenVerifier, VerifiedSignatures

if TYPE_CHECKING:
    from conftest import Checked

SEK = 100


def verifier_of(user: TokenUser) -> TokenVerifier:
    assert user.element.verifier is not None
    return user.element.verifier


def hand_over(a: TokenUser, b: TokenUser, token: Token, hops: int) -> Token:
    """``hops`` transfers back and forth between ``a`` and ``b``; each receiver verifies."""
    for _ in range(hops):
        child = a.element.transfer(token.id, b.element.keygen())
        b.element.store(child)
        token, a, b = child, b, a
    return token


def signatures_verified(verifier: TokenVerifier, token: Token) -> int:
    """How many signatures verifying ``token`` checks (whatever the answer)."""
    with count_crypto() as crypto, contextlib.suppress(OffpayError):
        verifier.verify(token)
    return crypto.total_verifies


# --- the memory itself -----------------------------------------------------------------------


def test_an_entry_names_the_exact_key_signature_and_message():
    entry = VerifiedSignatures.entry
    base = entry(b"O", b"key", b"sig", b"msg")
    assert base == entry(b"O", b"key", b"sig", b"msg")
    others = {
        entry(b"E", b"key", b"sig", b"msg"),
        entry(b"O", b"kez", b"sig", b"msg"),
        entry(b"O", b"key", b"siG", b"msg"),
        entry(b"O", b"key", b"sig", b"msG"),
        entry(b"O", b"ke", b"ysig", b"msg"),  # the same bytes, cut elsewhere
        entry(b"O", b"key", b"si", b"gmsg"),
    }
    assert base not in others and len(others) == 6


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=4), max_size=40), st.integers(0, 8))
def test_the_memory_is_bounded_and_forgets_the_least_recently_used(
    entries: list[bytes], capacity: int
):
    memory = VerifiedSignatures(capacity)
    for e in entries:
        memory.add(e)
        assert len(memory) <= capacity
    recent = list(dict.fromkeys(reversed(entries)))[:capacity]
    assert all(memory.knows(e) for e in recent)
    if capacity >= 2 and recent:
        oldest = recent[-1]
        assert memory.knows(oldest)  # now the most recently used
        memory.add(b"new entry that is longer than any other")
        assert memory.knows(oldest)
    memory.clear()
    assert len(memory) == 0


def test_a_failed_signature_is_not_remembered(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(100 * SEK))
    forged = replace(root, proof=(Signer.generate().sign(b"x" * 32),))
    verifier = verifier_of(ben).fresh()
    refused("token.bad_proof", verifier.verify, forged)
    remembered = len(verifier.remembered)  # the genuine endorsement, nothing else
    refused("token.bad_proof", verifier.verify, forged)
    assert len(verifier.remembered) == remembered == 1
    assert signatures_verified(verifier, forged) == 1  # the forged proof, again


# --- what it saves --------------------------------------------------------------------------


def test_a_token_that_comes_back_costs_only_its_new_hops(net: OfflineNetwork, checked: Checked):
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(100 * SEK))
    token = hand_over(ann, ben, root, 12)  # back with Ann, 12 ancestors
    earlier = token.ancestors[0].ancestors[0]  # the token Ann held two hops ago

    cold = verifier_of(ann).fresh()
    assert signatures_verified(cold, token) == 2 * 12 + 2  # every endorsement and proof
    warm = verifier_of(ann).fresh()
    warm.verify(earlier)
    assert signatures_verified(warm, token) == 4  # two new hops: endorsement + proof each
    assert warm.verify(token) == cold.verify(token)  # the same history
    assert signatures_verified(warm, token) == 0


def test_phase_three_of_a_transfer_verifies_only_the_new_hop(net: OfflineNetwork, checked: Checked):
    """Phase 2 verifies the offered token; phase 3 the new token, whose history is the offered
    token: with the memory, phase 3 verifies only the new hop's endorsement and proof."""
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-a")
    dan = net.add_token_user("Dan", "bank-a")
    checked.step(ann.app.withdraw, net.money(200 * SEK))
    checked.step(pay, ann, ben, 100 * SEK)
    checked.step(pay, ann, ben, 100 * SEK)
    dan.element.verifier = verifier_of(dan).fresh()
    dan.element.verifier.remembered = VerifiedSignatures(0)  # remembers nothing
    counts = []
    for receiver in (cat, dan):
        with count_crypto() as crypto:
            received = checked.step(pay, ben, receiver, 100 * SEK)
        counts.append(crypto.total_verifies)
        assert len(verifier_of(receiver).verify(received).consumed) == 3  # split, 2 transfers
    # the offered token's history: 3 endorsements (the split's sibling is not verified),
    # the mint's proof, 2 transfer proofs; phase 3 verifies all of them again without memory
    assert counts[1] - counts[0] == 6


def test_a_verifier_that_remembers_gives_the_same_history_for_split_and_merge(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    first = checked.step(pay, ann, ben, 120 * SEK)
    second = checked.step(pay, ann, ben, 80 * SEK)
    merged = checked.step(ben.element.merge, [first.id, second.id])
    warm = verifier_of(ben)
    for token in (first, second, merged):
        assert warm.verify(token) == warm.fresh().verify(token)


# --- what it must not skip --------------------------------------------------------------------


def test_a_revoked_owner_is_refused_although_its_token_was_verified_before(
    net: OfflineNetwork, checked: Checked
):
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-a")
    checked.step(ann.app.withdraw, net.money(100 * SEK))
    to_ben = checked.step(pay, ann, ben, 100 * SEK)
    warm = verifier_of(cat)
    warm.verify(to_ben)
    assert signatures_verified(warm, to_ben) == 0

    warm.trust.revoked.add(ben.element_id)  # a revocation list arrived
    refused("token.revoked", warm.verify, to_ben)
    refused("token.revoked", warm.check_address, ben.element.keygen())
    refused("token.revoked", warm.fresh().verify, to_ben)
    # An ancestor endorsed by a revoked element stays valid history, as for a fresh verifier.
    warm.trust.revoked = {ann.element_id}
    assert warm.verify(to_ben) == warm.fresh().verify(to_ben)


def test_a_forked_history_is_refused_although_each_branch_was_verified(
    net: OfflineNetwork, checked: Checked
):
    mal = net.add_token_user("Mal", "bank-a", online=500 * SEK)
    root = checked.step(mal.app.withdraw, net.money(100 * SEK))
    element = mal.element
    key = element._keys[root.owner]  # SIMULATED HARDWARE BREAK: the key signs twice
    first = element.transfer(root.id, element.keygen())
    element._keys[root.owner], element._tokens[root.id] = key, root
    second = element.transfer(root.id, element.keygen())
    warm = verifier_of(mal)
    assert warm.verify(first).consumed != warm.verify(second).consumed
    for t in (first, second):
        element._tokens[t.id] = t
    merged = TokenElement._transition(
        element,
        [first, second],
        [TokenBody(b"", net.money(200 * SEK), *_address(element))],
    )[0]
    assert signatures_verified(warm, merged) == 3  # only the merge: its endorsement, 2 proofs
    err = refused("token.double_spend", warm.verify, merged)
    assert isinstance(err, DoubleSpend) and err.token_id == root.id
    refused("token.double_spend", warm.fresh().verify, merged)


def _address(element: TokenElement) -> tuple[bytes, object]:
    address = element.keygen()
    return address.owner, address.endorsement


def test_a_new_token_on_a_remembered_history_is_verified(net: OfflineNetwork, checked: Checked):
    """Tokens that reuse a remembered history with a new last hop: the new hop's signatures
    are verified and its values and ids checked; nothing of the reused part vouches for it."""
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    cat = net.add_token_user("Cat", "bank-a")
    root = checked.step(ann.app.withdraw, net.money(100 * SEK))
    token = hand_over(ann, ben, root, 5)  # with Ben
    warm = verifier_of(cat)
    warm.verify(token)
    to_cat = cat.element.keygen()
    new_id = child_id([token.id], to_cat.owner, token.value)
    body = TokenBody(new_id, token.value, to_cat.owner, to_cat.endorsement)
    digest = transition_digest([token.id], [body])
    mallory = Signer.generate()

    def child(proof: bytes) -> Token:
        return Token(body.id, body.value, body.owner, body.endorsement, (proof,), (token,), ())

    forged = [
        ("token.bad_proof", child(mallory.sign(digest))),  # not the owner's signature
        ("token.bad_proof", child(token.proof[0])),  # the previous hop's proof, replayed
        (
            "token.value_mismatch",
            replace(child(mallory.sign(digest)), value=net.money(200 * SEK)),
        ),
        (  # a genuine, remembered endorsement, of another owner key
            "token.bad_endorsement",
            replace(child(mallory.sign(digest)), endorsement=token.endorsement),
        ),
    ]
    for code, t in forged:
        refused(code, warm.verify, t)
        refused(code, warm.fresh().verify, t)


def test_a_history_longer_than_the_recursion_limit_verifies(net: OfflineNetwork, checked: Checked):
    """The walk keeps its own stack: a long history gets an answer, not a RecursionError."""
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    token = checked.step(ann.app.withdraw, net.money(100 * SEK))
    a, b = ann.element, ben.element
    for _ in range(sys.getrecursionlimit() + 10):
        child = a.transfer(token.id, b.keygen())
        b._tokens[child.id] = child  # stored without verifying: the history is built fast
        token, a, b = child, b, a
    assert verifier_of(ann).fresh().verify(token).length == sys.getrecursionlimit() + 10


@pytest.mark.parametrize("capacity", [0, 1, 3])
def test_a_small_or_no_memory_gives_the_same_answers(
    net: OfflineNetwork, checked: Checked, capacity: int
):
    ann = net.add_token_user("Ann", "bank-a", online=500 * SEK)
    ben = net.add_token_user("Ben", "bank-b")
    root = checked.step(ann.app.withdraw, net.money(100 * SEK))
    token = hand_over(ann, ben, root, 4)
    base = verifier_of(ann)
    small = TokenVerifier(base.trust, base.mint_chain, VerifiedSignatures(capacity))
    assert small.verify(token) == base.fresh().verify(token)
    assert len(small.remembered) == capacity
    forged = replace(token, value=net.money(1 * SEK))
    refused("token.value_mismatch", small.verify, forged)
