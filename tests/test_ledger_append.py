"""The pure ledger append: what every backend stores is computed here, the same for every engine."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import LedgerProofError
from exchange.ledger import leaf_hash, root_hash, tree
from exchange.ledger.append import Appended, append, frontier_keys
from exchange.ledger.index import entry_refs

_names = st.text(alphabet="abcdefghij_0123456789", min_size=1, max_size=12)
_documents = st.fixed_dictionaries(
    {"type": _names, "time": st.just("2026-12-02T10:00:00.000Z")},
    optional={
        "packet": _names.map(lambda n: f"pkt_{n}"),
        "actor": st.fixed_dictionaries({"member": _names, "agency": _names}),
        "details": st.dictionaries(st.sampled_from(["recipient", "agency", "subject", "note"]), _names, max_size=3),
    },
)


def _grow(documents: list[dict[str, object]]) -> tuple[dict[tuple[int, int], bytes], list[Appended]]:
    """Append every document as a backend would: read the frontier from the stored nodes, store what comes back."""
    stored: dict[tuple[int, int], bytes] = {}
    appended = []
    for seq, document in enumerate(documents):
        frontier = {key: stored[key] for key in frontier_keys(seq)}
        row = append(seq, {**document, "seq": seq}, frontier)
        for level, index, value in row.nodes:
            assert (level, index) not in stored  # perfect subtrees are written once, never changed
            stored[level, index] = value
        appended.append(row)
    return stored, appended


@settings(max_examples=60)
@given(st.lists(_documents, min_size=1, max_size=70))
def test_appends_keep_rfc_9162_roots_and_the_index_at_every_size(documents: list[dict[str, object]]) -> None:
    """From stored rows alone, every size's root is RFC 9162's over the entries' bytes, and each entry's
    refs are what the index finds in its stored bytes."""
    stored, appended = _grow(documents)
    leaves = [row.leaf_hash for row in appended]
    assert leaves == [leaf_hash(row.entry) for row in appended]
    for size in range(len(appended) + 1):
        nodes = {key: stored[key] for key in tree.needed_nodes_for_root(size)}
        assert tree.compute_root(size, nodes) == root_hash(leaves[:size])
    for row in appended:
        assert json.loads(row.entry)["seq"] == row.seq
        assert list(row.refs) == entry_refs(json.loads(row.entry))


@settings(max_examples=40)
@given(st.lists(_documents, min_size=2, max_size=40), st.data())
def test_a_tampered_frontier_node_changes_the_root(documents: list[dict[str, object]], data: st.DataObject) -> None:
    """Tamper test: one altered stored node that a later append reads makes every root from then on wrong."""
    stored, appended = _grow(documents)
    seq = data.draw(st.sampled_from([s for s in range(len(appended) + 1) if tree.needed_nodes_for_append(s)]))
    key = tree.needed_nodes_for_append(seq)[0]  # a left sibling this append reads (1 always has one)
    frontier = {k: stored[k] for k in frontier_keys(seq)}
    frontier[key] = bytes(32)
    honest = append(seq, {"seq": seq, "type": "x"}, {k: stored[k] for k in frontier_keys(seq)})
    forged = append(seq, {"seq": seq, "type": "x"}, frontier)
    assert honest.leaf_hash == forged.leaf_hash and honest.nodes[-1] != forged.nodes[-1]


def test_an_entry_must_carry_the_sequence_number_it_is_appended_at() -> None:
    with pytest.raises(LedgerProofError, match="must say seq 3"):
        append(3, {"seq": 2, "type": "x"}, {(0, 2): bytes(32), (1, 0): bytes(32)})
    with pytest.raises(LedgerProofError):
        append(1, {"seq": 1, "type": "x"}, {})  # the leaf before it is missing from the frontier


@settings(max_examples=60)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=15))
def test_a_batch_reads_only_the_frontier_and_grows_the_same_tree(batches: list[int]) -> None:
    """Appending a batch as the service does (the frontier read once, each next append fed the nodes the one
    before made) stores exactly the nodes one-by-one appends store, whatever the batches' sizes."""
    stored: dict[tuple[int, int], bytes] = {}
    seq = 0
    for size in batches:
        nodes = {key: stored[key] for key in frontier_keys(seq)}  # a KeyError here: the frontier is not enough
        for _ in range(size):
            row = append(seq, {"seq": seq, "type": "x"}, nodes)
            nodes.update(((level, index), value) for level, index, value in row.nodes)
            stored.update(((level, index), value) for level, index, value in row.nodes)
            seq += 1
    one_by_one, _ = _grow([{"type": "x"} for _ in range(seq)])
    assert stored == one_by_one
