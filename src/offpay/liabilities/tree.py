"""A Merkle sum tree over customers' balances, in the sound construction: every node commits
to both children's hashes and both children's sums separately (a node that committed only to
its total would let a prover move value between siblings unseen, the flaw of the first Merkle
sum tree design), sums are non-negative integers of minor units below 2**63, and a leaf is
salted so that a proof shows neither another customer's balance nor their identity.

One leaf per customer, carrying its three wallets (online, shadow, merchant); the leaf's sum
is their total. A level with an odd number of nodes passes its last node up unchanged (never
duplicated: a duplicate would count its sum twice), so a proof's shape follows from the leaf's
position and the leaf count alone, both of which the verifier knows.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from offpay.errors import OffpayError

MAX_SUM = 2**63 - 1  # what a BIGINT column and the 8-byte encoding hold
LEAF_TAG = b"offpay-liabilities-leaf/1\x00"
NODE_TAG = b"offpay-liabilities-node/1\x00"


class ProofError(OffpayError):
    """An inclusion proof that does not lead to the published root and total."""

    code = "liabilities.bad_proof"


class AmountError(OffpayError):
    code = "liabilities.bad_amount"


@dataclass(frozen=True)
class Balances:
    """One customer's wallets at the period, in minor units."""

    online: int
    shadow: int
    merchant: int

    @property
    def total(self) -> int:
        return self.online + self.shadow + self.merchant


@dataclass(frozen=True)
class Node:
    hash: bytes
    sum: int


def _amount(value: int) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SUM:
        raise AmountError(f"an amount in the tree must be 0 to {MAX_SUM} minor units: {value!r}")
    return value.to_bytes(8, "big")


def _text(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def leaf(customer_id: str, salt: bytes, balances: Balances) -> Node:
    """The leaf of one customer: H(tag, salt, id, online, shadow, merchant), sum = total."""
    if len(salt) != 32:
        raise AmountError("a leaf's salt is 32 bytes")
    total = balances.total
    _amount(total)
    digest = hashlib.sha256(
        LEAF_TAG
        + salt
        + _text(customer_id)
        + _amount(balances.online)
        + _amount(balances.shadow)
        + _amount(balances.merchant)
    ).digest()
    return Node(digest, total)


def parent(left: Node, right: Node) -> Node:
    """Both children's hashes and both sums, each on its own."""
    total = left.sum + right.sum
    _amount(total)
    digest = hashlib.sha256(
        NODE_TAG + left.hash + _amount(left.sum) + right.hash + _amount(right.sum)
    ).digest()
    return Node(digest, total)


EMPTY = Node(hashlib.sha256(NODE_TAG + b"empty").digest(), 0)  # the root of no customers


@dataclass(frozen=True)
class Tree:
    levels: tuple[tuple[Node, ...], ...]  # leaves first, the root's level last

    @property
    def root(self) -> Node:
        return self.levels[-1][0] if self.levels[0] else EMPTY

    @property
    def leaf_count(self) -> int:
        return len(self.levels[0])

    def path(self, position: int) -> tuple[Node, ...]:
        """The siblings from the leaf at ``position`` up to the root (none where a level's
        last node passed up alone)."""
        if not 0 <= position < self.leaf_count:
            raise ProofError(f"no leaf at position {position}")
        siblings = []
        index = position
        for level in self.levels[:-1]:
            other = index ^ 1
            if other < len(level):
                siblings.append(level[other])
            index //= 2
        return tuple(siblings)


def build(leaves: list[Node]) -> Tree:
    levels = [tuple(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [parent(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        levels.append(tuple(above))
    return Tree(tuple(levels))


def root_of(position: int, leaf_count: int, start: Node, siblings: tuple[Node, ...]) -> Node:
    """The root a proof leads to; its shape (which side, where a node passes up alone) is
    derived from ``position`` and ``leaf_count``, never taken from the prover."""
    if not 0 <= position < leaf_count:
        raise ProofError(f"position {position} is outside a tree of {leaf_count} leaves")
    node, index, width, used = start, position, leaf_count, 0
    while width > 1:
        if index ^ 1 < width:
            if used == len(siblings):
                raise ProofError("the proof is shorter than the tree is high")
            sibling = siblings[used]
            used += 1
            _amount(sibling.sum)
            node = parent(node, sibling) if index % 2 == 0 else parent(sibling, node)
        index, width = index // 2, (width + 1) // 2
    if used != len(siblings):
        raise ProofError("the proof is longer than the tree is high")
    return node


def verify(
    root: Node,
    leaf_count: int,
    position: int,
    customer_id: str,
    salt: bytes,
    mine: Balances,
    siblings: tuple[Node, ...],
) -> None:
    """The leaf of ``customer_id`` with ``mine`` is counted in ``root``; :class:`ProofError`
    otherwise."""
    reached = root_of(position, leaf_count, leaf(customer_id, salt, mine), siblings)
    if not hmac.compare_digest(reached.hash, root.hash) or reached.sum != root.sum:
        raise ProofError(
            "the inclusion proof does not lead to the published root: this balance is not "
            "counted in the published total"
        )
