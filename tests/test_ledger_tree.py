"""Proofs from stored perfect-subtree hashes equal the list-based ones, in O(log n) node reads."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import LedgerProofError
from exchange.ledger import consistency_proof, inclusion_proof, leaf_hash, root_hash
from exchange.ledger.merkle import EMPTY_ROOT
from exchange.ledger.tree import (
    Frontier,
    NodeKey,
    compute_append,
    compute_inclusion_proof,
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
    needed_nodes_for_append,
    needed_nodes_for_consistency,
    needed_nodes_for_inclusion,
    needed_nodes_for_root,
    nodes_added_by_append,
    root_from_nodes,
)


class NodeStore:
    """A dict-backed node store that counts its batched reads, as a database store would issue them."""

    def __init__(self) -> None:
        self.nodes: dict[NodeKey, bytes] = {}
        self.reads = 0
        self.keys_read = 0

    def get_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        self.reads += 1
        self.keys_read += len(keys)
        return {key: self.nodes[key] for key in keys if key in self.nodes}

    def append(self, leaf: bytes) -> None:
        size = sum(1 for level, _ in self.nodes if level == 0)
        for level, index, value in nodes_added_by_append(size, leaf, self.get_nodes):
            assert (level, index) not in self.nodes
            self.nodes[(level, index)] = value


def grown(size: int) -> tuple[NodeStore, list[bytes]]:
    """A store and the leaf list after appending ``size`` leaves one by one."""
    store = NodeStore()
    leaves = [leaf_hash(b"entry %d" % i) for i in range(size)]
    for leaf in leaves:
        store.append(leaf)
    store.reads = store.keys_read = 0
    return store, leaves


def bound(size: int) -> int:
    """The most node reads a proof may need: twice the tree height, plus two."""
    return 2 * math.ceil(math.log2(max(size, 2))) + 2


sizes = st.integers(1, 300)


def test_appending_stores_exactly_the_perfect_subtrees() -> None:
    """After n appends the store holds every complete subtree (level, index) and nothing else."""
    for size in range(0, 70):
        store, leaves = grown(size)
        expected = {
            (level, index)
            for level in range(8)
            for index in range(size >> level)
        }
        assert set(store.nodes) == expected
        for (level, index), value in store.nodes.items():
            assert value == root_hash(leaves[index << level : (index + 1) << level])


def test_append_reads_one_left_sibling_per_completed_level() -> None:
    """Appending leaf 7 reads leaves 6, nodes (1, 2) and (2, 0), and creates four nodes."""
    assert needed_nodes_for_append(7) == [(0, 6), (1, 2), (2, 0)]
    assert needed_nodes_for_append(8) == []
    store, leaves = grown(7)
    new = leaf_hash(b"entry 7")
    created = compute_append(7, new, store.nodes)
    assert [(level, index) for level, index, _ in created] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert created[-1][2] == root_hash([*leaves, new])


@given(sizes, st.data())
def test_root_from_nodes_equals_root_hash(size: int, data: st.DataObject) -> None:
    """The root of every prefix, from stored nodes, equals the list-based root."""
    store, leaves = grown(size)
    prefix = data.draw(st.integers(0, size))
    assert root_from_nodes(prefix, store.get_nodes) == root_hash(leaves[:prefix])
    assert len(needed_nodes_for_root(prefix)) == bin(prefix).count("1")


def test_empty_tree_root_needs_no_read() -> None:
    """The root of the empty tree is SHA-256() and reads nothing."""
    store = NodeStore()
    assert root_from_nodes(0, store.get_nodes) == EMPTY_ROOT
    assert store.reads == 0


@given(sizes, st.data())
def test_inclusion_proof_from_nodes_equals_the_list_based_proof(size: int, data: st.DataObject) -> None:
    """For any tree size and leaf, the proof from stored nodes is RFC 9162's PATH, read in one batch."""
    store, leaves = grown(size)
    tree_size = data.draw(st.integers(1, size))
    index = data.draw(st.integers(0, tree_size - 1))
    assert inclusion_proof_from_nodes(index, tree_size, store.get_nodes) == inclusion_proof(leaves[:tree_size], index)
    assert store.reads <= 1
    assert store.keys_read <= bound(tree_size)


@given(sizes, st.data())
def test_consistency_proof_from_nodes_equals_the_list_based_proof(size: int, data: st.DataObject) -> None:
    """For any two sizes, the proof from stored nodes is RFC 9162's PROOF, read in one batch."""
    store, leaves = grown(size)
    new = data.draw(st.integers(0, size))
    old = data.draw(st.integers(0, new))
    assert consistency_proof_from_nodes(old, new, store.get_nodes) == consistency_proof(leaves[:new], old)
    assert store.reads <= 1
    assert store.keys_read <= bound(new)


def test_node_reads_stay_logarithmic_for_every_index_and_size() -> None:
    """Exhaustively up to 260 leaves: no proof needs more than 2·ceil(log2 n) + 2 nodes."""
    for size in range(1, 261):
        for index in range(size):
            assert len(needed_nodes_for_inclusion(index, size)) <= bound(size)
        for old in range(size + 1):
            assert len(needed_nodes_for_consistency(old, size)) <= bound(size)


def test_node_reads_stay_logarithmic_for_a_billion_leaves() -> None:
    """At 2**30 + 12345 leaves a proof still needs at most 64 nodes."""
    size = (1 << 30) + 12345
    for index in (0, 1, size // 2, size - 12346, size - 1):
        assert len(needed_nodes_for_inclusion(index, size)) <= bound(size)
    for old in (1, 3, (1 << 30) - 1, 1 << 30, size - 1):
        assert len(needed_nodes_for_consistency(old, size)) <= bound(size)


def test_needed_keys_then_compute_works_without_calling_back() -> None:
    """An async store can fetch the listed keys itself and compute from a plain dict."""
    store, leaves = grown(13)
    keys = needed_nodes_for_inclusion(5, 13)
    fetched = {key: store.nodes[key] for key in keys}
    assert compute_inclusion_proof(5, 13, fetched) == inclusion_proof(leaves, 5)


def test_a_missing_node_is_an_error_not_a_wrong_proof() -> None:
    """If the store cannot supply a node, the computation refuses."""
    with pytest.raises(LedgerProofError, match="did not supply"):
        compute_inclusion_proof(5, 13, {})


def test_a_malformed_stored_node_is_refused() -> None:
    """A stored hash that is not 32 bytes is refused."""
    store, _ = grown(4)
    store.nodes[(2, 0)] = b"short"
    with pytest.raises(LedgerProofError, match="32-byte"):
        root_from_nodes(4, store.get_nodes)


@pytest.mark.parametrize(
    ("index", "size"), [(-1, 4), (4, 4), (0, 0)], ids=["negative", "at-size", "empty-tree"]
)
def test_inclusion_keys_refuse_a_leaf_outside_the_tree(index: int, size: int) -> None:
    """There is no proof for a leaf the tree does not have."""
    with pytest.raises(LedgerProofError):
        needed_nodes_for_inclusion(index, size)


@pytest.mark.parametrize(("old", "new"), [(5, 4), (-1, 4), (0, -1)])
def test_consistency_keys_refuse_impossible_sizes(old: int, new: int) -> None:
    """An old size larger than the new one, or a negative size, is refused."""
    with pytest.raises(LedgerProofError):
        needed_nodes_for_consistency(old, new)


def test_append_refuses_a_malformed_leaf_hash() -> None:
    """The new leaf must be a 32-byte hash."""
    with pytest.raises(LedgerProofError):
        compute_append(0, b"short", {})


@given(st.lists(st.binary(max_size=16), max_size=300))
def test_frontier_root_equals_root_hash_after_every_append(entries: list[bytes]) -> None:
    """The O(log n) frontier gives the same root as the full leaf list at every size."""
    frontier = Frontier()
    leaves: list[bytes] = []
    assert frontier.root() == EMPTY_ROOT
    for entry in entries:
        leaves.append(leaf_hash(entry))
        frontier.append(leaves[-1])
        assert frontier.size == len(leaves)
    assert frontier.root() == root_hash(leaves)


def test_frontier_refuses_a_malformed_leaf_hash() -> None:
    """A leaf hash that is not 32 bytes cannot be appended."""
    with pytest.raises(LedgerProofError):
        Frontier().append(b"short")
