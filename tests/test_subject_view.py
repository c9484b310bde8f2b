"""The auditor's subject view: every ledger event about one child, by pseudonym, exported so it checks offline."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from exchange import crypto
from exchange.client import ApiError
from exchange.errors import LedgerProofError
from exchange.examples import REFERRAL, referral
from exchange.ledger import leaf_hash
from exchange.ledger.subject_export import verify_subject_export
from tests.conftest import Deployment
from tests.test_cli import cli, cli_json

OTHER_CHILD = "485 777 3456"


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


async def _two_packets_about_one_child_and_one_about_another(deployment: Deployment) -> dict[str, str]:
    """A referral (opened and acknowledged), its correction, and a referral about another child."""
    duty = _id(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        first = await dsl.send(referral([duty]))
        async with deployment.client("csc-duty") as recipient:
            await recipient.acknowledge(first["packet_id"])
        second = await dsl.correct(first["packet_id"], referral([duty]), ["child_address"])
        other = await dsl.send(referral([duty], subject_identifier=OTHER_CHILD))
    return {"first": first["packet_id"], "second": second["packet_id"], "other": other["packet_id"]}


async def _pseudonym(deployment: Deployment, identifier: str = REFERRAL["subject_identifier"]) -> str:
    async with deployment.client("auditor") as auditor:
        return auditor.pseudonym_of(identifier)


async def _everything(deployment: Deployment, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    async with deployment.client("auditor") as auditor:
        answer = await auditor.request("GET", f"/v1/ledger/entries?{query}&limit=1000")
    return [item["entry"] for item in answer["entries"]]


async def test_subject_view_lists_the_events_of_both_packets_about_the_child_and_none_about_another(
    deployment: Deployment,
) -> None:
    """Submission, delivery, opening, acknowledgement and supersession of both packets; nothing of the third."""
    packets = await _two_packets_about_one_child_and_one_about_another(deployment)
    pseudonym = await _pseudonym(deployment)
    async with deployment.client("auditor") as auditor:
        view = await auditor.subject(pseudonym, limit=1000)
    assert {p["packet_id"] for p in view["packets"]} == {packets["first"], packets["second"]}
    seqs = [item["seq"] for item in view["entries"]]
    assert seqs == sorted(seqs)
    about = {item["entry"].get("packet") for item in view["entries"]} - {None}
    assert about == {packets["first"], packets["second"]}
    types = [item["entry"]["type"] for item in view["entries"] if item["entry"].get("packet") == packets["first"]]
    for expected in ("packet.submitted", "packet.delivered", "packet.opened", "packet.acknowledged"):
        assert expected in types
    assert "packet.superseded" in types
    for packet_id in (packets["first"], packets["second"]):
        every = [e["seq"] for e in await _everything(deployment, packet=packet_id)]
        assert set(every) <= set(seqs)
    assert packets["other"] not in json.dumps(view)


async def test_the_look_up_is_itself_in_the_ledger_and_in_the_subjects_view(deployment: Deployment) -> None:
    """Who looked the child up is recorded with the pseudonym, and the next look-up shows it."""
    await _two_packets_about_one_child_and_one_about_another(deployment)
    pseudonym = await _pseudonym(deployment)
    async with deployment.client("auditor") as auditor:
        await auditor.subject(pseudonym)
        again = await auditor.subject(pseudonym, limit=1000)
    reads = await _everything(deployment, type="ledger.read")
    subject_reads = [r for r in reads if r["details"]["what"] == "subject"]
    assert len(subject_reads) == 2
    assert subject_reads[0]["actor"]["member"] == _id(deployment, "auditor")
    assert subject_reads[0]["details"]["params"]["pseudonym"] == pseudonym
    shown = [item["entry"] for item in again["entries"] if item["entry"]["type"] == "ledger.read"]
    assert [e["seq"] for e in shown] == [r["seq"] for r in subject_reads]


async def test_only_auditors_can_look_up_a_subject(deployment: Deployment) -> None:
    """A practitioner, a manager or an admin gets 403, for the view and for the export alike."""
    pseudonym = await _pseudonym(deployment)
    for label in ("school-dsl", "csc-manager", "csc-admin"):
        async with deployment.client(label) as member:
            for path in (f"/v1/ledger/subjects/{pseudonym}", f"/v1/ledger/subjects/{pseudonym}/export"):
                with pytest.raises(ApiError) as refused:
                    await member.request("GET", path)
                assert refused.value.http_status == 403, (label, path)


async def test_an_identifier_is_refused_in_place_of_a_pseudonym(deployment: Deployment) -> None:
    """The server asks for the pseudonym (400), and the identifier sent by mistake is not recorded."""
    async with deployment.client("auditor") as auditor:
        with pytest.raises(ApiError) as refused:
            await auditor.request("GET", "/v1/ledger/subjects/9434765919")
    assert refused.value.http_status == 400
    assert "9434765919" not in json.dumps(await _everything(deployment))


async def test_subject_view_is_paged_in_seq_order(deployment: Deployment) -> None:
    """Small pages followed by ``next_start`` give every event once, in order."""
    await _two_packets_about_one_child_and_one_about_another(deployment)
    pseudonym = await _pseudonym(deployment)
    async with deployment.client("auditor") as auditor:
        whole = await auditor.subject(pseudonym, limit=1000)
        collected: list[int] = []
        start: int | None = 0
        while start is not None:
            page = await auditor.subject(pseudonym, start=start, limit=3)
            assert len(page["entries"]) <= 3
            collected += [item["seq"] for item in page["entries"]]
            start = page["next_start"]
    assert collected == sorted(set(collected))
    assert [item["seq"] for item in whole["entries"]] == collected[: len(whole["entries"])]


async def test_subject_export_verifies_offline_against_the_server_key(deployment: Deployment, tmp_path: Path) -> None:
    """Each exported event hashes to its leaf and is proven in one signed head; the SDK checks it on receipt."""
    packets = await _two_packets_about_one_child_and_one_about_another(deployment)
    pseudonym = await _pseudonym(deployment)
    async with deployment.client("auditor") as auditor:
        text, verified = await auditor.subject_export(pseudonym, deployment.server_public_key)
    assert verified.head_signature_checked and verified.unproven == []
    assert set(verified.as_json()["packets"]) == {packets["first"], packets["second"]}
    assert verified.entries[-1][1]["type"] == "ledger.read"
    assert verified.entries[-1][1]["details"]["what"] == "subject_export"
    again = verify_subject_export(text.splitlines(), deployment.server_public_key, subject=pseudonym)
    assert [seq for seq, _ in again.entries] == [seq for seq, _ in verified.entries]
    with pytest.raises(LedgerProofError):
        verify_subject_export(text.splitlines(), deployment.server_public_key, subject="ab" * 32)


async def _export_lines(deployment: Deployment) -> tuple[list[dict[str, Any]], str]:
    await _two_packets_about_one_child_and_one_about_another(deployment)
    pseudonym = await _pseudonym(deployment)
    async with deployment.client("auditor") as auditor:
        text, _ = await auditor.subject_export(pseudonym, deployment.server_public_key)
    return [json.loads(line) for line in text.splitlines()], pseudonym


def _check(lines: list[dict[str, Any]], deployment: Deployment, pseudonym: str) -> str:
    with pytest.raises(LedgerProofError) as caught:
        verify_subject_export([json.dumps(line) for line in lines], deployment.server_public_key, subject=pseudonym)
    return str(caught.value.extras["problem"])


async def test_attack_tampered_entry_in_a_subject_export_is_caught(deployment: Deployment) -> None:
    """An entry changed after export (with its leaf hash recomputed to match) no longer leads to the signed root."""
    lines, pseudonym = await _export_lines(deployment)
    entry = json.loads(base64.b64decode(lines[2]["entry"]))
    entry["actor"]["member"] = _id(deployment, "csc-manager")
    forged = crypto.canonical_json(entry)
    lines[2] |= {"entry": base64.b64encode(forged).decode(), "leaf_hash": base64.b64encode(leaf_hash(forged)).decode()}
    assert _check(lines, deployment, pseudonym) == "head.root_mismatch"


async def test_attack_an_event_about_another_child_slipped_into_the_export_is_caught(
    deployment: Deployment,
) -> None:
    """A genuine, provably included entry about another packet is refused: the export is about one child only."""
    lines, pseudonym = await _export_lines(deployment)
    size = lines[1]["size"]
    submitted = await _everything(deployment, type="packet.submitted")
    other = next(e for e in submitted if e["details"]["subject"] != pseudonym)
    async with deployment.client("auditor") as auditor:
        proof = await auditor.request("GET", f"/v1/ledger/proof/inclusion?seq={other['seq']}&size={size}")
    slipped = {
        "kind": "entry",
        "seq": other["seq"],
        "entry": proof["entry"],
        "leaf_hash": proof["leaf_hash"],
        "proof": proof["proof"],
    }
    entries = sorted([*lines[2:-1], slipped], key=lambda line: int(line["seq"]))
    end = lines[-1] | {"entries": lines[-1]["entries"] + 1}
    assert _check([*lines[:2], *entries, end], deployment, pseudonym) == "entry.not_about_subject"


async def test_attack_truncated_or_reordered_subject_export_is_caught(deployment: Deployment) -> None:
    """Dropping the closing line, or swapping two entries, is reported."""
    lines, pseudonym = await _export_lines(deployment)
    assert _check(lines[:-1], deployment, pseudonym) == "export.truncated"
    swapped = [*lines[:2], lines[3], lines[2], *lines[4:]]
    assert _check(swapped, deployment, pseudonym) == "entry.seq_reordered"


async def test_cli_computes_the_pseudonym_locally_and_the_identifier_is_never_sent(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``exchange subject --identifier`` shows the events; the export verifies with ``subject-verify``."""
    packets = await _two_packets_about_one_child_and_one_about_another(deployment)
    auditor = ["--key", str(deployment.key_dir / "auditor.json"), "--server", deployment.url]
    linkage = ["--linkage-key", str(deployment.key_dir / "linkage.key")]
    identifier = str(REFERRAL["subject_identifier"])
    view = await cli_json("subject", "--identifier", identifier, *linkage, *auditor)
    assert {p["packet_id"] for p in view["packets"]} == {packets["first"], packets["second"]}
    words, _ = await cli("subject", view["subject"], *auditor)
    assert packets["first"] in words and "recorded in the ledger" in words
    export = tmp_path / "subject.jsonl"
    server_key = str(deployment.config.server_public_key_path)
    exported = await cli_json("subject", view["subject"], "--export", str(export), "--server-key", server_key, *auditor)
    assert exported["verified"] and exported["head_signature_checked"]
    checked = await cli_json("subject-verify", str(export), "--server-key", server_key, "--pseudonym", view["subject"])
    assert checked["entries"] == exported["entries"]
    everything = json.dumps(await _everything(deployment))
    assert identifier not in everything and identifier.replace(" ", "") not in everything
    log = deployment.config.record_log_path.read_text()
    assert identifier not in log and identifier.replace(" ", "") not in log
