"""Listings are paged with an opaque cursor and filtered by state: no work is silently hidden."""

from __future__ import annotations

import asyncio

import pytest

from exchange.client import ApiError
from exchange.examples import referral
from tests.conftest import Deployment

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines


async def _send_referrals(deployment: Deployment, count: int) -> list[str]:
    duty_id = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        sealed = [await dsl.prepare(referral([duty_id])) for _ in range(count)]
        sent = await asyncio.gather(*(dsl.submit(s) for s in sealed))
    return [s["packet_id"] for s in sent]


async def test_the_inbox_shows_more_than_a_hundred_packets(deployment: Deployment) -> None:
    """Found by a new user: the inbox showed only the newest 100; now every packet is reachable."""
    sent = await _send_referrals(deployment, 105)
    async with deployment.client("csc-duty") as duty:
        everything = await duty.inbox()
        first = await duty.page("/v1/inbox")
    assert sorted(p["packet_id"] for p in everything) == sorted(sent)
    assert len(first["packets"]) == 100 and first["next_cursor"]


async def test_pages_follow_one_another_without_gaps_or_repeats(deployment: Deployment) -> None:
    """Pages of three walk the outbox newest first, each packet exactly once, then stop."""
    sent = await _send_referrals(deployment, 7)
    seen: list[str] = []
    cursor = None
    pages = 0
    async with deployment.client("school-dsl") as dsl:
        while True:
            page = await dsl.page("/v1/outbox", cursor=cursor, limit=3)
            seen += [p["packet_id"] for p in page["packets"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        created = [p["created"] for p in await dsl.outbox()]
    assert pages == 3
    assert sorted(seen) == sorted(sent) and len(seen) == len(set(seen))
    assert created == sorted(created, reverse=True)


async def test_the_inbox_filters_what_is_not_yet_acknowledged(deployment: Deployment) -> None:
    """``state=delivered,opened`` lists exactly the packets still owed an acknowledgement."""
    sent = await _send_referrals(deployment, 3)
    async with deployment.client("csc-duty") as duty:
        await duty.acknowledge(sent[0])
        await duty.open(sent[1])
        owed = await duty.inbox(state="delivered,opened")
        done = await duty.inbox(state="acknowledged")
    assert sorted(p["packet_id"] for p in owed) == sorted(sent[1:])
    assert [p["packet_id"] for p in done] == [sent[0]]
    assert {p["delivery"]["status"] for p in owed} == {"delivered", "opened"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [("cursor=not-a-cursor", "cursor"), ("state=lost", "any of: pending, withdrawn, delivered"), ("limit=0", "limit")],
)
async def test_a_bad_cursor_or_state_is_a_clear_400(deployment: Deployment, query: str, expected: str) -> None:
    """A cursor the server never gave, an unknown state or a bad limit is refused with a sentence."""
    async with deployment.client("csc-duty") as duty:
        with pytest.raises(ApiError) as refused:
            await duty.request("GET", f"/v1/inbox?{query}")
    assert refused.value.http_status == 400
    assert refused.value.problem["code"] == "request.invalid"
    assert expected in refused.value.problem["detail"]


async def test_a_percent_encoded_filter_still_verifies(deployment: Deployment) -> None:
    """Found while building paging: ``%2C`` in a query broke the request signature; now it is signed as sent."""
    await _send_referrals(deployment, 1)
    async with deployment.client("csc-duty") as duty:
        answer = await duty.request("GET", "/v1/inbox?state=delivered%2Copened")
    assert len(answer["packets"]) == 1
