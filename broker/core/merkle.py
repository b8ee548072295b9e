"""The audit log's Merkle tree (RFC 9162, section 2.1): hashes, proofs, proof checks.

Pure code: no database. The tree over ``n`` entries has one leaf per entry, in ``seq``
order (leaf index ``seq - 1``)::

    leaf hash  = SHA-256(0x00 || canonical_bytes(entry content))
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")                      (the empty tree)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of two < n

Storage model. A *complete subtree* is named by ``(level, index)``: it covers the leaves
``index * 2**level`` to ``(index + 1) * 2**level - 1``; level 0 is the leaves. Once its
last leaf exists, a complete subtree's hash never changes, so the store keeps exactly
those (``2n - popcount(n)`` rows, keyed by ``node_position``) and appends write at most
``log2(n) + 1`` of them (``Frontier.append``). Every hash RFC 9162 needs, including the
root and the incomplete right-hand subtrees of a proof, is a right fold of complete
subtrees (``range_nodes``), so a proof is ``O(log n)`` stored nodes: the functions below
first say *which* nodes (``inclusion_nodes``, ``consistency_nodes``, ``root_nodes``),
the store fetches them in one query, and ``fold`` combines them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "Node",
    "consistency_nodes",
    "fold",
    "inclusion_nodes",
    "leaf_hash",
    "node_hash",
    "node_position",
    "prove",
    "range_nodes",
    "root_nodes",
    "verify_consistency",
    "verify_inclusion",
]

Node = tuple[int, int]
"""A complete subtree: ``(level, index)``."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def node_position(node: Node) -> int:
    """The complete subtree's index in post-order (children before parent, left to right):
    leaf 0 is 0, leaf 1 is 1, their parent 2, leaf 2 is 3, ... Appending a leaf writes the
    next positions in order, so a store keyed by position appends at the end of its index."""
    level, idx = node
    start = idx << level
    return 2 * start - start.bit_count() + (2 << level) - 2


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees, left to right, whose right fold is ``MTH(D[start:end])``.

    Valid for every range the RFC 9162 recursion produces (``start`` is a multiple of a
    power of two at least ``end - start``), which includes ``(0, n)``.
    """
    out: list[Node] = []
    size = end - start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def root_nodes(size: int) -> list[Node]:
    """The complete subtrees whose fold is the root of the tree of ``size`` leaves."""
    return range_nodes(0, size)


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold: ``node(h0, node(h1, ... node(h_{k-2}, h_{k-1})))``; empty -> EMPTY_ROOT."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")


def inclusion_nodes(index: int, size: int) -> list[list[Node]]:
    """The audit path of leaf ``index`` in a tree of ``size`` leaves (RFC 9162 2.1.3.1),
    from the leaf up: each element is the list of complete subtrees to ``fold``."""
    _check_index(index, size)
    path: list[list[Node]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(range_nodes(start + k, end))
            end = start + k
        else:
            path.append(range_nodes(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_nodes(old: int, new: int) -> list[list[Node]]:
    """The consistency proof from size ``old`` to ``new`` (RFC 9162 2.1.4.1), as lists of
    complete subtrees to ``fold``. Empty when ``old`` is 0 or equal to ``new``."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    proof: list[list[Node]] = []
    start, end, whole = 0, new, True
    m = old
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(range_nodes(start + k, end))
            end = start + k
        else:
            proof.append(range_nodes(start, start + k))
            start += k
            m -= k
            whole = False
    if not whole:
        proof.append(range_nodes(start, end))
    proof.reverse()
    return proof


def prove(
    plan: list[list[Node]], fetch: Callable[[set[Node]], Mapping[Node, bytes]]
) -> list[bytes]:
    """Turn a plan from ``inclusion_nodes``/``consistency_nodes`` into hashes, with one
    call to ``fetch`` (given every node needed, returns their hashes)."""
    wanted = {node for element in plan for node in element}
    found = fetch(wanted) if wanted else {}
    missing = wanted - set(found)
    if missing:
        raise LookupError(f"{len(missing)} tree node(s) are missing, e.g. {min(missing)}")
    return [fold([found[node] for node in element]) for element in plan]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of ``new`` leaves an extension of the one of ``old``?"""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass
class Frontier:
    """The right edge of a tree: the hashes of ``root_nodes(size)``, left to right.

    ``append`` adds one leaf and returns the complete subtrees it completes
    (``(level, index, hash)``, the leaf first): what an incremental store writes.
    """

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    @classmethod
    def of(cls, size: int, found: Mapping[Node, bytes]) -> Frontier:
        """The frontier of ``size`` leaves from stored nodes (``root_nodes(size)``)."""
        return cls(size, [found[node] for node in root_nodes(size)])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        index = self.size
        written = [(0, index, leaf)]
        h, level = leaf, 0
        while index >> level & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            written.append((level, index >> level, h))
        self.hashes.append(h)
        self.size += 1
        return written

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        return fold(self.hashes)
