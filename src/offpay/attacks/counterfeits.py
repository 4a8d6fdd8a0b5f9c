"""Counterfeit tokens (FEDS 2025-105, "Counterfeiting"): every way the suite forges a token
or its history, each with the refusal code a verifier gives it, and the attack that offers
each to an honest element offline and deposits it from a broken one."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from offpay.attacks.checked import ISSUED_PER_BANK, Checked, expect
from offpay.attacks.play import Play
from offpay.attacks.tokens import offer, pay
from offpay.attacks.tools import SEK
from offpay.crypto.keys import Signer
from offpay.money import Money
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.tokens.model import (
    ENDORSE_DOMAIN,
    Endorsement,
    Token,
    TokenBody,
    mint_digest,
    transition_digest,
)
from offpay.tokens.tamper import break_element, repair_element, store_unverified


@dataclass
class Forgery:
    net: OfflineNetwork
    elsewhere: OfflineNetwork
    mal: TokenUser
    ann: TokenUser
    ben: TokenUser
    root: Token  # minted to Mal, unspent
    received: Token  # Ann → Mal, one ancestor
    intercepted: Token  # Ann → Ben: somebody else's

    def money(self, minor: int) -> Money:
        return self.net.money(minor)


def make_forgery(checked: Checked, elsewhere: OfflineNetwork, suffix: str = "") -> Forgery:
    """Mal holds a minted token and one Ann paid him; Ben holds one Ann paid him. ``suffix``
    names the people apart when one network holds several forgeries."""
    net = checked.net
    mal = net.add_token_user(f"Mal{suffix}", "bank-a", online=500 * SEK)
    ann = net.add_token_user(f"Ann{suffix}", "bank-a", online=500 * SEK)
    ben = net.add_token_user(f"Ben{suffix}", "bank-b")
    root = checked.step(mal.app.withdraw, net.money(100 * SEK))
    checked.step(ann.app.withdraw, net.money(40 * SEK))
    received = checked.step(pay, ann, mal, 40 * SEK)
    checked.step(ann.app.withdraw, net.money(70 * SEK))
    intercepted = checked.step(pay, ann, ben, 70 * SEK)
    return Forgery(net, elsewhere, mal, ann, ben, root, received, intercepted)


def another_central_bank() -> OfflineNetwork:
    """Another central bank with its own root, mint and elements: nothing of it is trusted
    by the network attacked."""
    other = OfflineNetwork()
    for name in other.banks:
        other.issue(name, ISSUED_PER_BANK)
    other.add_token_user("Eve", "bank-a")
    return other


def raised_minted_value(f: Forgery) -> Token:
    return replace(f.root, value=f.money(1000 * SEK))


def raised_transferred_value(f: Forgery) -> Token:
    return replace(f.received, value=f.money(400 * SEK))


def raised_ancestor_value(f: Forgery) -> Token:
    (parent,) = f.received.ancestors
    return replace(f.received, ancestors=(replace(parent, value=f.money(400 * SEK)),))


def changed_owner(f: Forgery) -> Token:
    """Ben's token, re-addressed to a key of Mal's element."""
    mine = f.mal.element.keygen()
    return replace(f.intercepted, owner=mine.owner, endorsement=mine.endorsement)


def forged_transfer_proof(f: Forgery) -> Token:
    (parent,) = f.received.ancestors
    digest = transition_digest([parent.id], [f.received.body])
    return replace(f.received, proof=(f.mal.element.signer.sign(digest),))


def proof_of_another_token(f: Forgery) -> Token:
    return replace(f.root, proof=f.received.proof)


def _second_branch(f: Forgery) -> Token:
    """Mal's element, broken, spends its root to Ben and then again to a key of its own."""
    break_element(f.mal.element)
    try:
        f.ben.element.store(f.mal.element.transfer(f.root.id, f.ben.element.keygen()))
        return f.mal.element.transfer(f.root.id, f.mal.element.keygen())
    finally:
        repair_element(f.mal.element)


def double_spend_hidden_by_removing_the_ancestor(f: Forgery) -> Token:
    return replace(_second_branch(f), ancestors=())  # claims to be freshly minted


def double_spend_hidden_by_replacing_the_ancestor(f: Forgery) -> Token:
    spare = f.mal.app.withdraw(f.money(100 * SEK))  # an unspent token of the same value
    return replace(_second_branch(f), ancestors=(spare,))


def double_spend_hidden_by_renaming_the_ancestor(f: Forgery) -> Token:
    branch = _second_branch(f)
    return replace(branch, ancestors=(replace(f.root, id=os.urandom(16)),))


def _both_branches_merged(f: Forgery) -> Token:
    break_element(f.mal.element)
    try:
        first = f.mal.element.transfer(f.root.id, f.mal.element.keygen())
        second = f.mal.element.transfer(f.root.id, f.mal.element.keygen())
    finally:
        repair_element(f.mal.element)
    f.mal.element.store(first)
    f.mal.element.store(second)
    break_element(f.mal.element)
    try:
        return f.mal.element.merge([first.id, second.id])
    finally:
        repair_element(f.mal.element)


def double_spend_hidden_by_dropping_a_merged_branch(f: Forgery) -> Token:
    merged = _both_branches_merged(f)
    return replace(merged, ancestors=merged.ancestors[:1], proof=merged.proof[:1])


def double_spend_hidden_by_dropping_a_branch_and_its_value(f: Forgery) -> Token:
    merged = _both_branches_merged(f)
    return replace(
        merged,
        value=f.money(100 * SEK),
        ancestors=merged.ancestors[:1],
        proof=merged.proof[:1],
    )


def _root_for_mal(f: Forgery, minter: Signer) -> Token:
    address = f.mal.element.keygen()
    body = TokenBody(os.urandom(16), f.money(250 * SEK), address.owner, address.endorsement)
    proof = minter.sign(mint_digest(body))
    return Token(body.id, body.value, body.owner, body.endorsement, (proof,), (), ())


def root_signed_by_an_element(f: Forgery) -> Token:
    return _root_for_mal(f, f.mal.element.signer)


def root_signed_by_another_central_banks_mint(f: Forgery) -> Token:
    return _root_for_mal(f, f.elsewhere.central.mint.credential.signer)


def endorsed_by_an_element_of_another_root(f: Forgery) -> Token:
    """The owner key endorsed by a genuine element certified under another central bank."""
    eve = f.elsewhere.token_users["Eve"].element
    owner = f.mal.element.keygen().owner
    endorsement = Endorsement(f.mal.element_id, eve.chain, eve.signer.sign(ENDORSE_DOMAIN + owner))
    return replace(f.root, owner=owner, endorsement=endorsement)


def endorsed_by_a_certificate_that_is_not_an_elements(f: Forgery) -> Token:
    """The owner key 'endorsed' by the intermediary's engine key: certified, but no element."""
    bank = f.mal.bank
    owner = f.mal.element.keygen().owner
    signature = bank.credential.signer.sign(ENDORSE_DOMAIN + owner)
    endorsement = Endorsement(f.mal.element_id, bank.credential.chain, signature)
    return replace(f.root, owner=owner, endorsement=endorsement)


def forged_endorsement_signature(f: Forgery) -> Token:
    signature = Signer.generate().sign(ENDORSE_DOMAIN + f.root.owner)
    return replace(f.root, endorsement=replace(f.root.endorsement, signature=signature))


def endorsement_of_another_key(f: Forgery) -> Token:
    other = f.mal.element.keygen()
    return replace(f.root, endorsement=other.endorsement)


COUNTERFEITS: dict[str, tuple[Callable[[Forgery], Token], str]] = {
    "raised-value-of-a-minted-token": (raised_minted_value, "token.bad_proof"),
    "raised-value-of-a-transferred-token": (raised_transferred_value, "token.value_mismatch"),
    "raised-value-of-an-ancestor": (raised_ancestor_value, "token.value_mismatch"),
    "changed-owner": (changed_owner, "token.bad_id"),  # the id is derived from the owner
    "forged-transfer-proof": (forged_transfer_proof, "token.bad_proof"),
    "proof-of-another-token": (proof_of_another_token, "token.bad_proof"),
    "double-spend-hidden-by-removing-the-ancestor": (
        double_spend_hidden_by_removing_the_ancestor,
        "token.bad_proof",
    ),
    "double-spend-hidden-by-replacing-the-ancestor": (
        double_spend_hidden_by_replacing_the_ancestor,
        "token.bad_id",  # the token's id no longer derives from the parents it names
    ),
    "double-spend-hidden-by-renaming-the-ancestor": (
        double_spend_hidden_by_renaming_the_ancestor,
        "token.bad_id",  # the token's id no longer derives from the parents it names
    ),
    "double-spend-hidden-by-dropping-a-merged-branch": (
        double_spend_hidden_by_dropping_a_merged_branch,
        "token.value_mismatch",
    ),
    "double-spend-hidden-by-dropping-a-branch-and-its-value": (
        double_spend_hidden_by_dropping_a_branch_and_its_value,
        "token.bad_id",  # the token's id no longer derives from the parents it names
    ),
    "root-not-signed-by-the-mint": (root_signed_by_an_element, "token.bad_proof"),
    "root-signed-by-another-central-banks-mint": (
        root_signed_by_another_central_banks_mint,
        "token.bad_proof",
    ),
    "endorsed-by-an-element-of-another-root": (
        endorsed_by_an_element_of_another_root,
        "crypto.bad_certificate",
    ),
    "endorsed-by-a-certificate-that-is-not-an-elements": (
        endorsed_by_a_certificate_that_is_not_an_elements,
        "crypto.bad_certificate",
    ),
    "forged-endorsement-signature": (forged_endorsement_signature, "token.bad_endorsement"),
    "endorsement-of-another-key": (endorsement_of_another_key, "token.bad_endorsement"),
}


def token_counterfeit(play: Play) -> None:
    """Each counterfeit of the catalogue, on fresh holders: Cat's honest element refuses it
    when it verifies it and when it is offered; deposited from Mal's broken element, the
    intermediary's vault refuses it, credits nothing, and blocks and revokes the element that
    signed an invalid token over."""
    checked, net = play.checked, play.net
    elsewhere = another_central_bank()
    for number, (case, (build, code)) in enumerate(COUNTERFEITS.items(), start=1):
        forgery = make_forgery(checked, elsewhere, f" {number}")
        counterfeit = build(forgery)
        cat = net.add_token_user(f"Cat {number}", "bank-b")
        play.tried(f"{case}: offered to Cat's element, then deposited by Mal's broken element")
        outstanding = net.central.mint.outstanding()
        play.refused_any(
            code, "Cat's element", f"{case}: verified", cat.element.verify, counterfeit
        )
        play.refused_any(code, "Cat's element", f"{case}: offered", offer, forgery.mal, cat,
                         counterfeit)  # fmt: skip
        expect(cat.tokens == net.money(0), f"Cat took the {case} counterfeit")
        mal = forgery.mal
        store_unverified(mal.element, counterfeit)
        online = mal.online
        play.refused_any(code, f"{mal.bank.name} (vault)", f"{case}: deposited",
                         mal.app.deposit, counterfeit.value)  # fmt: skip
        expect(mal.online == online, f"the {case} counterfeit was credited")
        expect(net.central.mint.outstanding() == outstanding, "the mint's tokens changed")
        play.blocked(mal.bank.name, mal.element_id)
