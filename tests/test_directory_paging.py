"""The directory is paged and filtered, and a send fetches only the members it seals to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from exchange.client import ApiError, ExchangeClient
from exchange.examples import referral
from tests.conftest import Deployment
from tests.crowd import Crowd, start_crowded_deployment
from tests.test_cli import cli_json

#: More extra members than one default page (100) holds.
CROWD = 120
#: The demo directory's members (tests/conftest.py seeds exchange.bootstrap.DEMO_MEMBERS).
DEMO = 9
KEY_FIELDS = {"key_id", "use", "public", "not_before", "not_after"}


class RecordingClient(ExchangeClient):
    """The SDK client unchanged, keeping the path and answer of each directory request it makes."""

    directory_calls: list[tuple[str, Any]]

    async def request_raw(self, method: str, path: str, body: bytes | None, *, signed: bool = True) -> Any:
        answer = await super().request_raw(method, path, body, signed=signed)
        if path.startswith("/v1/directory"):
            self.directory_calls.append((path, answer))
        return answer


def recording(deployment: Deployment, label: str) -> RecordingClient:
    linkage = bytes.fromhex((deployment.key_dir / "linkage.key").read_text().strip())
    client = RecordingClient(deployment.url, deployment.credentials(label), linkage_key=linkage)
    client.directory_calls = []
    return client


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


def _listed(calls: list[tuple[str, Any]]) -> list[str]:
    return [m["id"] for _, answer in calls for m in answer["members"]]


def _bytes(calls: list[tuple[str, Any]]) -> int:
    return sum(len(json.dumps(answer)) for _, answer in calls)


@pytest.fixture
async def crowded(tmp_path: Path) -> AsyncIterator[tuple[Deployment, Crowd]]:
    """The demo directory and CROWD more members in five other agencies, behind a real server."""
    deployment, crowd, close = await start_crowded_deployment(tmp_path, CROWD)
    try:
        yield deployment, crowd
    finally:
        await close()


async def test_a_send_to_a_member_fetches_only_that_member(crowded: tuple[Deployment, Crowd]) -> None:
    """Issue 8 finding "the directory is fetched whole on every send": the client asks for the recipient by id
    and the server answers with that one entry."""
    deployment, _ = crowded
    duty = _id(deployment, "csc-duty")
    async with recording(deployment, "school-dsl") as dsl:
        sent = await dsl.send(referral([duty]))
        calls = list(dsl.directory_calls)
        everyone = await dsl.directory_members()
    assert sent["status"] == "delivered"
    assert [parse_qs(urlsplit(path).query)["member"] for path, _ in calls] == [[duty]]
    assert _listed(calls) == [duty]
    assert len(everyone) == DEMO + CROWD
    # One entry is a small fraction of what a whole directory of this size would have cost.
    assert _bytes(calls) * 50 < sum(len(json.dumps(m)) for m in everyone)


async def test_a_send_to_an_agency_fetches_only_its_duty_members(crowded: tuple[Deployment, Crowd]) -> None:
    """An agency inbox is fetched as that agency's members holding a duty role: not its admin, nobody else."""
    deployment, _ = crowded
    csc = deployment.credentials("csc-duty").agency_id
    async with recording(deployment, "school-dsl") as dsl:
        sent = await dsl.send(referral([f"agency:{csc}"]))
        calls = list(dsl.directory_calls)
    assert sent["status"] == "delivered" and sent["skipped"] == []
    assert sorted(_listed(calls)) == sorted([_id(deployment, "csc-duty"), _id(deployment, "csc-manager")])
    [(path, _)] = calls
    query = parse_qs(urlsplit(path).query)
    assert query["agency"] == [csc]
    assert set(query["role"][0].split(",")) == {"practitioner", "manager", "safeguarding_lead"}


async def test_the_directory_pages_through_every_member_once(crowded: tuple[Deployment, Crowd]) -> None:
    """Pages of 25 follow an opaque cursor: every active member exactly once, each with the same key entries."""
    deployment, crowd = crowded
    seen: list[str] = []
    cursor = None
    async with deployment.client("police-officer") as police:
        while True:
            page = await police.directory(cursor=cursor, limit=25)
            assert len(page["members"]) <= 25
            for member in page["members"]:
                assert {k["use"] for k in member["keys"]} == {"signing", "encryption"}
                assert all(set(k) == KEY_FIELDS for k in member["keys"])
                assert {a["id"] for a in page["agencies"]} >= {member["agency"]}
            seen.extend(m["id"] for m in page["members"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == len(set(seen)) == DEMO + CROWD
    assert set(crowd.members) <= set(seen)


async def test_a_member_look_up_answers_only_the_ids_named(crowded: tuple[Deployment, Crowd]) -> None:
    """Named ids come back alone (unknown ones are simply absent); the SDK asks in chunks of at most 100."""
    deployment, crowd = crowded
    named = [crowd.members[0], crowd.members[7], "mem_000000000000000000000000"]
    async with recording(deployment, "school-dsl") as dsl:
        page = await dsl.directory(members=named)
        assert sorted(m["id"] for m in page["members"]) == sorted(named[:2])
        dsl.directory_calls.clear()
        found = await dsl.lookup_members(crowd.members)
        assert set(found) == set(crowd.members)
        assert [len(parse_qs(urlsplit(path).query)["member"]) for path, _ in dsl.directory_calls] == [100, CROWD - 100]
        with pytest.raises(ApiError) as refused:
            await dsl.directory(members=crowd.members[:101], limit=1000)
    assert (refused.value.http_status, refused.value.problem["code"]) == (400, "request.invalid")


async def test_the_cli_lists_a_directory_larger_than_a_page(crowded: tuple[Deployment, Crowd]) -> None:
    """``exchange members list`` follows the cursor, so no member is cut off at a page's end."""
    deployment, crowd = crowded
    key = ["--key", str(deployment.key_dir / "school-dsl.json"), "--server", deployment.url]
    listed = await cli_json("members", "list", *key)
    assert len(listed["members"]) == DEMO + CROWD
    assert len(listed["agencies"]) == 4 + len(crowd.agencies)
    one = await cli_json("members", "list", "--agency", crowd.agencies[0], *key)
    assert [a["id"] for a in one["agencies"]] == [crowd.agencies[0]]
    assert {m["agency"] for m in one["members"]} == {crowd.agencies[0]}


async def test_filters_by_agency_and_role_combine(deployment: Deployment) -> None:
    """``agency`` and ``role`` narrow the listing; an empty but real agency is still named in ``agencies``."""
    csc = deployment.credentials("csc-duty").agency_id or ""
    async with deployment.client("school-dsl") as dsl:
        practitioners = await dsl.directory(csc, role="practitioner")
        admins = await dsl.directory(csc, role="agency_admin,auditor")
        nobody = await dsl.directory(csc, role="auditor")
    assert [m["id"] for m in practitioners["members"]] == [_id(deployment, "csc-duty")]
    assert [m["id"] for m in admins["members"]] == [_id(deployment, "csc-admin")]
    assert nobody["members"] == [] and [a["id"] for a in nobody["agencies"]] == [csc]


async def test_revoked_keys_are_not_listed(deployment: Deployment) -> None:
    """The directory lists current keys only: a revoked encryption key is gone from the member's entry."""
    duty = deployment.credentials("csc-duty")
    async with deployment.client("csc-duty") as member:
        await member.revoke_key(duty.encryption.key_id)
    async with deployment.client("school-dsl") as dsl:
        [entry] = (await dsl.directory(members=[duty.member_id or ""]))["members"]
    assert [k["key_id"] for k in entry["keys"]] == [duty.signing.key_id]


@pytest.mark.parametrize(
    "query",
    ["cursor=not-a-cursor", "role=wizard", "limit=0", "limit=1001", "limit=ten"],
)
async def test_bad_directory_parameters_are_400(deployment: Deployment, query: str) -> None:
    """A cursor the server did not give out, an unknown role or a limit out of range is a 400 problem."""
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.request("GET", f"/v1/directory?{query}")
    assert (refused.value.http_status, refused.value.problem["code"]) == (400, "request.invalid")


async def test_agencies_are_listed_page_by_page(deployment: Deployment) -> None:
    """``GET /v1/agencies`` pages by name with the same opaque cursor as every listing."""
    async with deployment.client("school-dsl") as dsl:
        first = await dsl.request("GET", "/v1/agencies?limit=3")
        rest = await dsl.request("GET", f"/v1/agencies?limit=3&cursor={first['next_cursor']}")
        every = await dsl.agencies()
    names = [a["name"] for a in first["agencies"] + rest["agencies"]]
    assert len(names) == 4 and names == sorted(names) and rest["next_cursor"] is None
    assert [a["name"] for a in every] == names
