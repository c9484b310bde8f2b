"""Agency inboxes: a duty member without a current encryption key is skipped, and the sender is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exchange.errors import InvalidRequest, NoCurrentKey
from exchange.examples import referral
from tests.conftest import Deployment
from tests.test_cli import cli, cli_json
from tests.test_requests import request_file


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


def _inbox(deployment: Deployment, label: str) -> str:
    return f"agency:{deployment.credentials(label).agency_id}"


async def _revoke_encryption_key(deployment: Deployment, label: str) -> None:
    """The member revokes their own encryption key (a lost laptop, say), keeping their signing key."""
    async with deployment.client(label) as member:
        await member.revoke_key(deployment.credentials(label).encryption.key_id)


async def test_one_member_revoking_their_key_no_longer_breaks_sends_to_their_agency(deployment: Deployment) -> None:
    """Issue 8 finding "one member of an agency inbox revoking their encryption key makes every send to that
    agency fail": the packet goes to the others, and the sender is told who was left out and why."""
    await _revoke_encryption_key(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([_inbox(deployment, "csc-duty")]))
        outbox = await dsl.outbox()
    assert sent["status"] == "delivered"
    assert [(s["member"], s["reason"]) for s in sent["skipped"]] == [
        (_id(deployment, "csc-duty"), "no_current_encryption_key")
    ]
    assert "revoked or expired" in sent["skipped"][0]["detail"]
    [packet] = [p for p in outbox if p["packet_id"] == sent["packet_id"]]
    assert [r["member"] for r in packet["recipients"]] == [_id(deployment, "csc-manager")]
    async with deployment.client("csc-manager") as manager:
        opened = await manager.open(sent["packet_id"])
    assert opened.body["fields"]


async def test_an_agency_whose_inbox_has_no_current_key_is_a_clear_refusal(deployment: Deployment) -> None:
    """When nobody on duty can open it, nothing is sent and the sender is told whom to ask."""
    for label in ("csc-duty", "csc-manager"):
        await _revoke_encryption_key(deployment, label)
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(NoCurrentKey) as refused:
            await dsl.send(referral([_inbox(deployment, "csc-duty")]))
        assert await dsl.outbox() == []
    message = str(refused.value)
    assert _id(deployment, "csc-duty") in message and _id(deployment, "csc-manager") in message
    assert "Nothing was sent" in message and "exchange keys rotate" in message


async def test_a_named_recipient_without_a_key_is_refused_not_skipped(deployment: Deployment) -> None:
    """A member chosen by id is never silently dropped: no current key is a refusal naming them."""
    await _revoke_encryption_key(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(NoCurrentKey) as refused:
            await dsl.send(referral([_id(deployment, "csc-duty")]))
    assert _id(deployment, "csc-duty") in str(refused.value)


async def test_a_member_named_and_in_the_inbox_is_a_recipient_once(deployment: Deployment) -> None:
    """Naming a member and their agency seals to them once and skips nobody who has a key."""
    async with deployment.client("school-dsl") as dsl:
        resolution = await dsl.resolve([_id(deployment, "csc-manager"), _inbox(deployment, "csc-duty")])
    assert sorted(r.member for r in resolution.recipients) == sorted(
        [_id(deployment, "csc-duty"), _id(deployment, "csc-manager")]
    )
    assert resolution.skipped == ()


async def test_an_unknown_agency_is_named_as_such(deployment: Deployment) -> None:
    """An agency id the directory does not hold is an error that says so, not an empty inbox."""
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(InvalidRequest, match="not in the directory"):
            await dsl.resolve(["agency:agy_000000000000000000000000"])


async def test_a_request_to_an_agency_skips_a_member_without_a_key(deployment: Deployment) -> None:
    """The server expects a request's details sealed to the duty members who have a key, as the client seals them."""
    await _revoke_encryption_key(deployment, "csc-duty")
    async with deployment.client("police-officer") as police:
        sent = await police.request_information(request_file(_inbox(deployment, "csc-duty")))
    assert sent["holders"] == [_id(deployment, "csc-manager")]
    assert [s["member"] for s in sent["skipped"]] == [_id(deployment, "csc-duty")]
    async with deployment.client("csc-manager") as manager:
        assert (await manager.open_request(sent["request_id"])).details is not None


async def test_the_cli_names_who_was_skipped(deployment: Deployment, tmp_path: Path) -> None:
    """``exchange send`` to an agency prints who was left out and why; ``members list`` marks them."""
    await _revoke_encryption_key(deployment, "csc-duty")
    packet_file = tmp_path / "referral.json"
    packet_file.write_text(json.dumps(referral([_inbox(deployment, "csc-duty")])))
    key = ["--key", str(deployment.key_dir / "school-dsl.json"), "--server", deployment.url]
    out, _ = await cli("send", str(packet_file), *key)
    assert f"not sent to Alex Reid (duty social worker) ({_id(deployment, 'csc-duty')})" in out
    assert "no current encryption key" in out
    listed, _ = await cli("members", "list", *key)
    [line] = [line for line in listed.splitlines() if _id(deployment, "csc-duty") in line]
    assert line.endswith("no current encryption key")
    as_json = await cli_json("members", "list", *key)
    assert _id(deployment, "csc-duty") in {m["id"] for m in as_json["members"]}
