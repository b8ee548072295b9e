"""The RFC 9162 Merkle tree: published vectors, an independent reference, proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import merkle
from broker.core.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_nodes,
    inclusion_nodes,
    leaf_hash,
    prove,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency test vectors (RFC 6962/9162 hashing), leaves as raw bytes.
LEAVES = [
    bytes.fromhex(x)
    for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip


# -- an independent implementation, written straight from RFC 9162 section 2.1 ------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def stored(leaves: list[bytes]) -> tuple[Frontier, dict]:
    """The tree built incrementally, as the store builds it, and its stored nodes."""
    frontier, nodes = Frontier(), {}
    for data in leaves:
        for level, idx, h in frontier.append(leaf_hash(data)):
            nodes[(level, idx)] = h
    return frontier, nodes


def fetcher(nodes: dict):
    calls = []

    def fetch(wanted: set) -> dict:
        calls.append(wanted)
        return {n: nodes[n] for n in wanted if n in nodes}

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


# -- the published vectors ------------------------------------------------------------


def test_roots_match_the_published_vectors() -> None:
    assert EMPTY_ROOT.hex() == ROOTS[0]
    frontier, nodes = stored(LEAVES)
    for n in range(9):
        assert merkle.fold([nodes[x] for x in merkle.root_nodes(n)]).hex() == ROOTS[n]
        assert ref_mth(LEAVES[:n]).hex() == ROOTS[n]
    assert frontier.root().hex() == ROOTS[8]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(index, size, path) -> None:
    _, nodes = stored(LEAVES)
    proof = prove(inclusion_nodes(index, size), fetcher(nodes))
    assert [p.hex() for p in proof] == path
    root = bytes.fromhex(ROOTS[size])
    assert verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, root)
    assert not verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, EMPTY_ROOT)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(old, new, path) -> None:
    _, nodes = stored(LEAVES)
    proof = prove(consistency_nodes(old, new), fetcher(nodes))
    assert [p.hex() for p in proof] == path
    assert verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), proof)


# -- properties, against the reference ----------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_inclusion_proofs_for_many_sizes(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    frontier, nodes = stored(leaves)
    root = ref_mth(leaves)
    assert frontier.root() == root
    index = data.draw(st.integers(0, n - 1))
    fetch = fetcher(nodes)
    proof = prove(inclusion_nodes(index, n), fetch)
    assert proof == ref_path(index, leaves)
    assert len(fetch.calls) == (1 if n > 1 else 0)  # one read of the store at most
    assert verify_inclusion(leaf_hash(leaves[index]), index, n, proof, root)
    # a different leaf, position or root does not verify (the size is bound by the
    # signed checkpoint, not by the proof)
    assert not verify_inclusion(leaf_hash(leaves[index] + b"x"), index, n, proof, root)
    if n > 1:
        other = (index + 1) % n
        assert not verify_inclusion(leaf_hash(leaves[index]), other, n, proof, root) or (
            leaves[other] == leaves[index] and proof == ref_path(other, leaves)
        )
    if proof:
        bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        assert not verify_inclusion(leaf_hash(leaves[index]), index, n, bad, root)


@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists, data=st.data())
def test_consistency_proofs_for_many_sizes(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    _, nodes = stored(leaves)
    old = data.draw(st.integers(0, n))
    new = data.draw(st.integers(old, n))
    proof = prove(consistency_nodes(old, new), fetcher(nodes))
    if 0 < old < new:
        assert proof == ref_subproof(old, leaves[:new], True)
    old_root, new_root = ref_mth(leaves[:old]), ref_mth(leaves[:new])
    assert verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        forged = ref_mth([b"forged", *leaves[1:old]])
        assert not verify_consistency(old, new, forged, new_root, proof)
        assert not verify_consistency(old, new, old_root, EMPTY_ROOT, proof)
        assert not verify_consistency(old, new, old_root, new_root, proof[:-1])


@settings(max_examples=40, deadline=None)
@given(leaves=leaf_lists)
def test_appends_write_only_complete_subtrees_log_n_each(leaves: list[bytes]) -> None:
    frontier = Frontier()
    for i, data in enumerate(leaves):
        written = frontier.append(leaf_hash(data))
        assert len(written) <= (i + 1).bit_length()
        for level, idx, h in written:
            start = idx << level
            assert start + (1 << level) <= i + 1  # complete: its last leaf exists
            assert h == ref_mth(leaves[start : start + (1 << level)])
        assert frontier.root() == ref_mth(leaves[: i + 1])


def test_appends_write_consecutive_post_order_positions() -> None:
    frontier, positions = Frontier(), []
    for i in range(300):
        positions += [merkle.node_position((lv, ix)) for lv, ix, _ in frontier.append(bytes(32))]
        assert len(positions) == 2 * (i + 1) - (i + 1).bit_count()
    assert positions == list(range(len(positions)))
    assert {merkle.node_position(n) for n in merkle.root_nodes(300)} <= set(positions)


def test_proof_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        inclusion_nodes(5, 5)
    with pytest.raises(ValueError):
        consistency_nodes(6, 5)
    assert consistency_nodes(0, 5) == [] and consistency_nodes(5, 5) == []
    assert not verify_inclusion(EMPTY_ROOT, 3, 3, [], EMPTY_ROOT)
    assert not verify_consistency(3, 5, EMPTY_ROOT, EMPTY_ROOT, [])
    _, nodes = stored(LEAVES[:3])
    del nodes[(0, 2)]
    with pytest.raises(LookupError):
        prove(inclusion_nodes(0, 3), fetcher(nodes))
