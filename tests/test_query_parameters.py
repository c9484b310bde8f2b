"""Every query parameter of every route is checked against the OpenAPI document: shapes, not free text.

Findings of issue 8: out-of-range time filters were a 500 (``since=0001-01-01T00:00:00+01:00``
overflowed converting to UTC); any text in a ledger filter was accepted and written into the
permanent ledger with the auditor's recorded read (``agency=Jane Smith``); a misspelt filter was
silently ignored, so the "filtered" answer held everything; a cursor nesting JSON deeply was a 500.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote

import pytest

from exchange.client import ApiError
from exchange.errors import InvalidQuery, InvalidRequest
from exchange.lifecycle import DeliveryState, PacketState, RequestState
from exchange.schemas import SCHEMAS_DIR
from exchange.service.escalations import EscalationFilter
from exchange.service.ledger import checked_filters
from exchange.web.query import documented
from tests.conftest import Deployment

OPENAPI = json.loads((SCHEMAS_DIR / "openapi.v1.json").read_text(encoding="utf-8"))


async def _get(deployment: Deployment, label: str, path: str) -> Any:
    async with deployment.client(label) as client:
        return await client.request("GET", path)


async def _refused(deployment: Deployment, label: str, path: str) -> ApiError:
    with pytest.raises(ApiError) as refused:
        await _get(deployment, label, path)
    return refused.value


async def _recorded_reads(deployment: Deployment) -> str:
    """Every ``ledger.read`` entry's params, as JSON text (what the permanent ledger holds of the reads)."""
    found = await _get(deployment, "auditor", "/v1/ledger/entries?type=ledger.read&limit=1000")
    return json.dumps([entry["entry"]["details"].get("params") for entry in found["entries"]])


@pytest.mark.parametrize(
    "query",
    ["since=0001-01-01T00:00:00%2B01:00", "until=9999-12-31T23:59:59-01:00", "since=2025-03-01", "until=2999-01-01"],
)
async def test_a_time_filter_at_the_edge_of_the_calendar_is_answered_not_a_500(
    deployment: Deployment, query: str
) -> None:
    """Found by an attacker: a time whose offset crosses year 1 or 9999 overflowed (500); it now bounds nothing."""
    answer = await _get(deployment, "auditor", f"/v1/ledger/entries?{query}")
    assert isinstance(answer["entries"], list)


@pytest.mark.parametrize(
    "query", ["since=99999-01-01", "until=garbage", "since=2025-02-30", "until=2025-03-01T25:00:00Z"]
)
async def test_a_time_filter_that_is_not_a_time_is_a_400_naming_it(deployment: Deployment, query: str) -> None:
    """``since`` and ``until`` take an RFC 3339 time or a date; anything else is a 400 that names the filter."""
    error = await _refused(deployment, "auditor", f"/v1/ledger/entries?{query}")
    name = query.split("=")[0]
    assert (error.http_status, error.problem["code"], error.problem["parameter"]) == (400, "request.invalid", name)


@pytest.mark.parametrize(
    "query",
    ["agency=Jane%20Smith", "member=Jane%20Smith", "packet=Jane%20Smith", "type=Jane%20Smith", "agency=agy_%0AJane"],
)
async def test_free_text_in_a_ledger_filter_is_refused_and_never_recorded(deployment: Deployment, query: str) -> None:
    """Found by an attacker: a filter of any text was written into the permanent ledger with the read; now 400."""
    error = await _refused(deployment, "auditor", f"/v1/ledger/entries?{query}")
    assert error.http_status == 400
    assert "Jane" not in error.problem["detail"]
    assert "Jane" not in await _recorded_reads(deployment)


async def test_a_recorded_read_holds_only_checked_and_normalised_filters(deployment: Deployment) -> None:
    """What the ledger records of a read is the ids and codes checked, and times in UTC, as the store compares them."""
    agency = deployment.credentials("csc-duty").agency_id
    query = f"agency={agency}&since=2025-03-01&until=2030-01-01t09:00:00%2B01:00"
    await _get(deployment, "auditor", f"/v1/ledger/entries?{query}")
    recorded = [params for params in json.loads(await _recorded_reads(deployment)) if "agency" in params]
    times = {"since": "2025-03-01T00:00:00.000Z", "until": "2030-01-01T08:00:00.000Z"}
    assert recorded == [{"agency": agency, **times, "start": 0, "limit": 100}]


async def test_health_answers_whatever_its_query(deployment: Deployment) -> None:
    """/health reads no parameter; a monitor's cache-buster (``?_=123``) still gets the service's health."""
    async with deployment.client("csc-duty") as client:
        assert (await client.request("GET", "/health?_=123", signed=False))["status"] == "ok"


def test_the_ledger_service_checks_its_filters_whoever_calls_it() -> None:
    """The shapes are checked in the service too, before the read is recorded, not only by the web layer."""
    assert checked_filters({"type": "packet.delivered", "member": None, "agency": ""}) == {"type": "packet.delivered"}
    for filters in ({"agency": "Jane Smith"}, {"type": "packet.delivered\n"}, {"colour": "blue"}, {"since": 3}):
        with pytest.raises(InvalidQuery):
            checked_filters(filters)


async def test_a_misspelt_filter_is_refused_not_ignored(deployment: Deployment) -> None:
    """Found by an attacker: ``?agnecy=`` was ignored and every entry came back as if filtered; now 400."""
    error = await _refused(deployment, "auditor", "/v1/ledger/entries?agnecy=agy_0123456789abcdef")
    assert error.http_status == 400 and "'agnecy'" in error.problem["detail"] and "agency" in error.problem["detail"]


async def test_an_unknown_parameter_that_is_not_a_name_is_refused_without_repeating_it(deployment: Deployment) -> None:
    """A parameter name is repeated in the refusal only when it looks like one of ours, never free text."""
    error = await _refused(deployment, "csc-duty", f"/v1/inbox?{quote('Jane Smith')}=1")
    assert error.http_status == 400 and "Jane" not in error.problem["detail"]


async def test_a_list_parameter_may_be_repeated_and_each_of_its_items_is_checked(deployment: Deployment) -> None:
    """``member`` of the directory is a list (repeated, or comma-separated): each id is checked, none echoed."""
    duty, manager = (deployment.credentials(label).member_id or "" for label in ("csc-duty", "csc-manager"))
    found = await _get(deployment, "school-dsl", f"/v1/directory?member={duty}&member={manager}")
    assert sorted(m["id"] for m in found["members"]) == sorted([duty, manager])
    error = await _refused(deployment, "school-dsl", f"/v1/directory?member={duty},{quote('Jane Smith')}")
    assert (error.http_status, error.problem["parameter"]) == (400, "member") and "Jane" not in error.problem["detail"]
    # Found by the fuzz run: an empty item (``member=&member=``) was dropped and answered as if it named nobody.
    for query in ("member=", f"member={duty},,{manager}"):
        assert (await _refused(deployment, "school-dsl", f"/v1/directory?{query}")).http_status == 400


async def test_a_recipient_that_is_no_member_id_is_not_in_the_directory(deployment: Deployment) -> None:
    """The SDK asks the directory only for what has a member id's shape; anything else is simply not listed."""
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(InvalidRequest, match="not in the directory"):
            await dsl.resolve(["Jane Smith"])


async def test_a_parameter_given_twice_is_refused(deployment: Deployment) -> None:
    """``limit=1&limit=1000``: which one counts would depend on the parser, so neither does."""
    error = await _refused(deployment, "csc-duty", "/v1/inbox?limit=1&limit=1000")
    assert (error.http_status, error.problem["parameter"]) == (400, "limit")


@pytest.mark.parametrize("value", ["1_000", "%D9%A3", "+5", "1e3", "99999999999999999999"])
async def test_a_number_must_be_written_in_plain_digits(deployment: Deployment, value: str) -> None:
    """Python's int() reads ``1_000`` and Arabic-Indic digits; a query number is plain ASCII digits only."""
    error = await _refused(deployment, "csc-duty", f"/v1/inbox?limit={value}")
    assert (error.http_status, error.problem["parameter"]) == (400, "limit")


async def test_a_ledger_position_in_the_path_is_ascii_digits(deployment: Deployment) -> None:
    """``/v1/ledger/receipts/٣`` (an Arabic-Indic three) matched the route's ``\\d`` and read as entry 3; now 404."""
    error = await _refused(deployment, "auditor", "/v1/ledger/receipts/%D9%A3")
    assert error.http_status == 404


async def test_a_deeply_nested_cursor_is_a_400_not_a_500(deployment: Deployment) -> None:
    """Found by fuzzing: a cursor decoding to 1,500 nested lists made the JSON parser recurse out (500)."""
    cursor = base64.urlsafe_b64encode(b"[" * 1500).decode().rstrip("=")
    for path in ("/v1/inbox", "/v1/outbox", "/v1/escalations", "/v1/requests", "/v1/decisions"):
        error = await _refused(deployment, "csc-duty", f"{path}?cursor={cursor}")
        assert error.http_status == 400, path


async def test_a_state_filter_names_the_states_but_never_repeats_the_text(deployment: Deployment) -> None:
    """An unknown state is refused with the list of known ones, without echoing what was sent."""
    error = await _refused(deployment, "csc-duty", f"/v1/inbox?state={quote('Jane Smith')}")
    assert error.http_status == 400 and "Jane" not in error.problem["detail"] and "delivered" in error.problem["detail"]


@pytest.mark.parametrize(
    ("path", "states"),
    [
        ("/v1/inbox", DeliveryState),
        ("/v1/outbox", PacketState),
        ("/v1/requests", RequestState),
        ("/v1/escalations", EscalationFilter),
    ],
)
def test_the_documented_state_filters_are_exactly_the_states_the_server_knows(path: str, states: Any) -> None:
    """Each listing's documented ``state`` pattern accepts every state of its kind, alone and listed, only those."""
    pattern = re.compile(documented()[("GET", path)]["state"].validator.schema["allOf"][0]["pattern"])
    for state in states:
        assert pattern.search(state.value) and pattern.search(f"{state.value}, {state.value}")
    assert not pattern.search("lost") and not pattern.search("delivered,")


def test_every_query_parameter_is_documented_with_a_shape_not_bare_text() -> None:
    """A new query parameter cannot take free text by accident: each has a pattern, an enum, a $ref or bounds."""
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                shape = parameter["schema"]
                if shape.get("type") == "array":
                    shape = shape["items"]
                constrained = {"pattern", "enum", "$ref", "const"} & set(shape) or (
                    shape.get("type") == "integer" and {"minimum", "maximum"} <= set(shape)
                )
                assert constrained, f"{method.upper()} {path} ?{parameter['name']}"


def test_every_served_route_has_its_query_parameters_read_from_the_document() -> None:
    """The checker knows every documented operation (a route missing here would take no parameters at all)."""
    operations = {(method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item}
    assert operations == set(documented())
