"""Property-based fuzzing of the whole API: schemathesis against ``schemas/openapi.v1.json`` on a live server.

Every request schemathesis generates (valid and invalid parameters and bodies) is signed with a demo
member's key over its exact bytes (RFC 9421 over the final URL, RFC 9530 digest of the body as sent),
so it gets past authentication and reaches the handlers. Three times in four the signer is the member
most likely allowed to call the route, else anyone of any role or nobody (unsigned). Path parameters
are sometimes the ids of real packets and members seeded before the run; a generated manifest is
sometimes sealed and signed for real, so the sharing rules judge it; a generated key sometimes is a
real one; times favour the calendar's edges. The rate limit is raised for the run.

Asserted for every request: never a 5xx; unsigned is 401 and signed is never 401; the status, media
type and body match the document (schemathesis's checks, the problem document's shape included);
a schema-valid request is refused only for what no schema can say, never for its shape; a packet is
accepted only if it was sealed and signed for real; and after the run the store holds the seeded
packets and those accepted, each of which the sharing rules, judging it again, allow.

Short by default (20 examples per operation, the same every run, ~25 s, in ``scripts/test``).
``EXCHANGE_FUZZ=long`` (``scripts/fuzz``) runs 300 per operation, randomly seeded;
``EXCHANGE_FUZZ_EXAMPLES=N`` sets the count.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.config import SchemathesisConfig

from exchange import crypto, httpsig, policy, statements
from exchange.errors import ExchangeError
from exchange.examples import referral, referral_without_consent
from exchange.keyfile import MemberCredentials
from exchange.schemas import SCHEMAS_DIR
from exchange.service.directory import actor_for_key
from exchange.service.packets import sharing_context
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, start_deployment

LONG = os.environ.get("EXCHANGE_FUZZ") == "long"
EXAMPLES = int(os.environ.get("EXCHANGE_FUZZ_EXAMPLES", "300" if LONG else "20"))

#: Members of every role, so authorisation paths (allowed and refused) are exercised too; None sends unsigned.
SIGNERS = (
    "school-dsl",  # safeguarding lead and practitioner
    "school-head",  # manager
    "school-admin",  # agency admin
    "csc-duty",  # practitioner
    "csc-manager",  # manager and safeguarding lead
    "police-officer",  # practitioner of a third agency
    "auditor",
    None,
)

T = TypeVar("T")

#: aiohttp's longest request target (8190 bytes): beyond it the parser answers 400 itself, in text/plain.
_HTTP_LINE_LIMIT = 8190

#: Who is most likely allowed to call each part of the API; a request goes from them three times in four,
#: so most get past authorisation to the code behind it (the rest are from anybody, or nobody).
LIKELY_ALLOWED = (
    ("/v1/ledger", "auditor"),
    ("/v1/approvals", "school-head"),
    ("/v1/members", "school-admin"),
    ("/v1/keys", "school-admin"),
    ("/v1/inbox", "csc-duty"),
    ("/v1/packets/{packet_id}/acknowledgement", "csc-duty"),
    ("/v1/packets/{packet_id}/reports", "csc-duty"),
    ("/v1/requests", "police-officer"),
)


def _times() -> st.SearchStrategy[str]:
    """RFC 3339 times that favour the edges: years 1 and 9999, offsets of a whole day, ``t`` and ``z``, leap days.

    Edges are where a time stops converting to UTC (OverflowError) or a parser disagrees with the format
    check; schemathesis's own date-time strategy rarely reaches them.
    """
    years = st.sampled_from([1, 2, 1970, 2000, 2026, 9998, 9999]) | st.integers(1, 9999)
    offsets = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+01:00", "-01:00", "+05:30"])
    fractions = st.sampled_from(["", ".0", ".123", ".999999", ".123456789"])
    ends = ("0001-01-01T00:00:00", "9999-12-31T23:59:59.999999999")
    corners = [end + offset for end in ends for offset in ("Z", "z", "+23:59", "-23:59", "+00:01", "-00:01")]
    return st.sampled_from(corners) | st.builds(
        lambda y, md, sep, hms, frac, off: f"{y:04d}-{md}{sep}{hms}{frac}{off}",
        years,
        st.sampled_from(["01-01", "12-31", "02-28", "06-15"]),
        st.sampled_from(["T", "t"]),
        st.sampled_from(["00:00:00", "23:59:59", "12:00:00"]),
        fractions,
        offsets,
    )


def _dates() -> st.SearchStrategy[str]:
    """Calendar dates that favour the edges (0001-01-01, 9999-12-31)."""
    years = st.sampled_from([1, 9999]) | st.integers(1, 9999)
    return st.builds(lambda y, md: f"{y:04d}-{md}", years, st.sampled_from(["01-01", "12-31", "02-28"]))


schemathesis.openapi.format("date-time", _times())
schemathesis.openapi.format("date", _dates())


def _fuzzed_document() -> schemathesis.BaseSchema:
    """The OpenAPI document as published, without its security scheme: the signing hook authenticates.

    Left in, schemathesis would generate and omit a ``Signature`` header of its own; the hook replaces
    it anyway, and unsigned requests are drawn as a signer of their own (``None``).
    """
    path = SCHEMAS_DIR / "openapi.v1.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    for item in document["paths"].values():
        for operation in item.values():
            operation.pop("security", None)
    document["components"].pop("securitySchemes", None)
    # packet.v1.json leaves the manifest an object (the server checks it against manifest.v1.json and the
    # catalogue next, with messages of its own); generating valid manifests reaches the sharing rules.
    packet = document["paths"]["/v1/packets"]["post"]["requestBody"]["content"]["application/json"]
    packet["schema"] = {"allOf": [packet["schema"], {"properties": {"manifest": {"$ref": "manifest.v1.json"}}}]}
    # A schema-valid request may still be refused for what no schema can say: a request that makes no sense
    # (400: a packet to oneself, a key already expired), a signature, seal or sharing rule (422), an id that
    # names nothing (404), a role or relationship (403), a state (409, 410). A refusal *for its shape* is
    # not among them: that is asserted separately (_refused_for_its_shape).
    refusals = ["2xx", "400", "403", "404", "409", "410", "422"]
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": refusals}}})
    loaded = schemathesis.openapi.from_dict(document, config=config)
    loaded.location = path.absolute().as_uri()  # the request bodies' $refs name the files beside it
    return loaded


schema = _fuzzed_document()


class _Signed(requests.auth.AuthBase):
    """Sign the request as it will be sent: its final URL and exact body bytes (RFC 9421, RFC 9530)."""

    def __init__(self, key: crypto.SigningKey) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        assert isinstance(body, bytes), "schemathesis sends whole bodies, never streams"
        assert request.method is not None and request.url is not None
        request.headers.update(httpsig.sign_request(request.method, request.url, body, self.key))
        return request


@dataclass
class _Live:
    """The server under fuzzing, on its own event loop in a thread; the real ids seeded; what it answered."""

    deployment: Deployment
    loop: asyncio.AbstractEventLoop
    credentials: dict[str, MemberCredentials]
    real: dict[str, list[str]] = field(default_factory=dict)
    #: Every demo member as a packet can be sealed to them (their current encryption key).
    recipients: list[crypto.Recipient] = field(default_factory=list)
    #: Packets the fuzzing sealed and signed for real, and the status the server gave each it accepted.
    accepted: dict[str, int] = field(default_factory=dict)
    sealed: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(120)


def _serve(root: Path, ready: threading.Event, box: dict[str, Any]) -> None:
    """Run a deployment on this thread's own event loop until ``box["stop"]`` is set (from any thread)."""

    async def main() -> None:
        deployment, close = await start_deployment(root, rate_limit_per_minute=10_000_000)
        stopping = asyncio.Event()
        box.update(deployment=deployment, loop=asyncio.get_running_loop(), stop=stopping)
        ready.set()
        await stopping.wait()
        await close()

    asyncio.run(main())


async def _seed(live: _Live) -> None:
    """Real objects for path parameters (delivered and held packets, every demo member) and recipients."""
    deployment = live.deployment
    duty = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        packets = [(await dsl.send(referral([duty])))["packet_id"] for _ in range(2)]
        packets.append((await dsl.send(referral_without_consent([duty])))["packet_id"])
    members = [c.member_id or "" for c in live.credentials.values()]
    live.real = {"packet_id": packets, "member_id": members}
    async with deployment.client("auditor") as auditor, deployment.client("school-dsl") as dsl:
        found = await auditor.resolve_recipients(members) + await dsl.resolve_recipients(members)
    live.recipients = list({r.member: r for r in found}.values())


def _seal(case: schemathesis.Case[Any], signer: str, pick: int, live: _Live) -> str | None:
    """Seal and sign a generated manifest as its signer's client would: real recipients, real keys.

    The sender, recipients and content section are the only parts replaced; everything else stays as
    generated, so the server's sharing rules (not its signature checks) decide. Returns the packet id.
    """
    body: Any = case.body
    if not isinstance(body, dict) or not isinstance(body.get("manifest"), dict):
        return None
    credentials = live.credentials[signer]
    others = [r for r in live.recipients if r.member != credentials.member_id]
    chosen = [others[(pick // 3 + i) % len(others)] for i in range(1 + pick % 3)]
    manifest = {k: v for k, v in body["manifest"].items() if k != "content"}
    manifest["sender"] = {
        "member": credentials.member_id,
        "agency": credentials.agency_id,
        "signing_key": credentials.signing.key_id,
    }
    manifest["recipients"] = [{"member": r.member, "agency": r.agency, "encryption_key": r.key_id} for r in chosen]
    try:
        sealed = crypto.seal_packet(manifest, {"fields": []}, chosen, credentials.signing)
    except (ExchangeError, TypeError, ValueError, KeyError, AttributeError):
        return None  # a manifest too broken to seal goes as generated
    case.body = {
        "manifest": sealed.manifest,
        "signature": crypto.b64encode(sealed.signature),
        "body": crypto.b64encode(sealed.body),
        "sealed_keys": {m: crypto.b64encode(k) for m, k in sealed.sealed_keys.items()},
    }
    live.sealed += 1
    packet_id = sealed.manifest.get("packet_id")
    return packet_id if isinstance(packet_id, str) else None


def _real_keys(case: schemathesis.Case[Any], signer: str, live: _Live) -> None:
    """Give a generated registration or new key real public keys with their proofs of possession (and the
    admin's agency), so it gets as far as the checks behind them; the rest stays as generated."""
    body: Any = case.body
    if not isinstance(body, dict):
        return
    fresh = MemberCredentials.generate()
    public = {"signing": fresh.signing.public_bytes, "encryption": fresh.encryption.public_bytes}
    repaired = dict(body)
    for name, use in (("signing_key", "signing"), ("encryption_key", "encryption")):
        if isinstance(body.get(name), dict) and "public" in body[name]:
            repaired[name] = body[name] | {"public": crypto.b64encode(public[use])}
    if "proof" in body and "signing_key" in body:  # a registration: the new member's own signature
        enrolment = statements.enrolment_statement(fresh.signing.key_id, fresh.encryption.key_id)
        repaired["proof"] = crypto.b64encode(fresh.signing.sign(enrolment))
    if isinstance(body.get("use"), str) and body["use"] in public and "public" in body:
        repaired["public"] = crypto.b64encode(public[body["use"]])
        member = (case.path_parameters or {}).get("member_id")
        if "proof" in body and body["use"] == "signing" and isinstance(member, str):
            statement = statements.new_key_statement(member, fresh.signing.key_id, "signing")
            repaired["proof"] = crypto.b64encode(fresh.signing.sign(statement))
    if "agency" in body:
        repaired["agency"] = live.credentials[signer].agency_id
    case.body = repaired  # assigned, not edited in place, so schemathesis judges the case as it is sent


@pytest.fixture(scope="module")
def live() -> Iterator[_Live]:
    """A real exchange on 127.0.0.1 (demo directory, rate limit raised) serving from a background thread."""
    with tempfile.TemporaryDirectory(prefix="exchange-fuzz-") as root:
        ready, box = threading.Event(), dict[str, Any]()
        thread = threading.Thread(target=_serve, args=(Path(root), ready, box), daemon=True)
        thread.start()
        assert ready.wait(60), "the server did not start"
        deployment: Deployment = box["deployment"]
        credentials = {label: deployment.credentials(label) for label in SIGNERS if label is not None}
        running = _Live(deployment, box["loop"], credentials)
        running.run(_seed(running))
        try:
            yield running
        finally:
            running.loop.call_soon_threadsafe(box["stop"].set)
            thread.join(30)
            took = time.monotonic() - running.started
            total = sum(running.statuses.values())
            by_status = Counter[int]()
            for (_, status), count in running.statuses.items():
                by_status[status] += count
            print(
                f"\nfuzz: {total} requests in {took:.1f} s, {EXAMPLES} examples per operation;"
                f" by status: {dict(sorted(by_status.items()))}; {running.sealed} generated packets sealed"
                f" and signed for real, {len(running.accepted)} of them accepted"
            )


@schema.parametrize()
@schema.given(
    anyone=st.sampled_from(SIGNERS),
    as_likely=st.integers(0, 3),
    real_ids=st.booleans(),
    repair=st.integers(0, 3),
    pick=st.integers(min_value=0, max_value=2**16),
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not LONG,  # the short run in scripts/test is the same every time; the long one explores
)
def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(
    case: schemathesis.Case[Any],
    anyone: str | None,
    as_likely: int,
    real_ids: bool,
    repair: int,
    pick: int,
    live: _Live,
) -> None:
    """Whatever a member (of any role) or a stranger sends, the answer is documented and never a 5xx."""
    likely = next((label for prefix, label in LIKELY_ALLOWED if case.path.startswith(prefix)), "school-dsl")
    signer = likely if as_likely else anyone
    if real_ids and case.path_parameters:
        real = {name: ids[pick % len(ids)] for name, ids in live.real.items() if name in case.path_parameters}
        case.path_parameters = case.path_parameters | real
    sealed = None
    if signer is not None and repair and case.method == "POST":
        if case.path == "/v1/packets":
            sealed = _seal(case, signer, pick, live)
        elif case.path in ("/v1/members", "/v1/members/{member_id}/keys"):
            _real_keys(case, signer, live)
    auth = _Signed(live.credentials[signer].signing) if signer is not None else None
    response = case.call(base_url=live.deployment.url, auth=auth, timeout=30)
    live.statuses[(f"{case.method} {case.path}", response.status_code)] += 1
    assert response.status_code < 500, response.text[:500]
    target = urlsplit(response.request.url)
    if len(target.path) + len(target.query) + 1 > _HTTP_LINE_LIMIT:
        # Found by the long run: the document allows 100 member ids of up to 68 characters, a request line
        # the HTTP parser refuses itself (400, text/plain, as the document's info says); nothing else to check.
        assert response.status_code == 400
        return
    if signer is None:
        assert response.status_code == 401 or case.path == "/health", "an unsigned request was not refused"
    else:
        # Signed over exactly what was sent, whatever the query's encoding: it must verify.
        assert response.status_code != 401, response.text[:500]
    if case.method == "POST" and case.path == "/v1/packets" and response.status_code < 400:
        # Only a packet sealed and signed for real can be accepted; whether it should be is checked after the run.
        assert sealed is not None, "a generated packet was accepted without a valid seal and signature"
        live.accepted[sealed] = response.status_code
    if signer is not None:
        _refused_for_its_shape(case, response)
    excluded = [checks.ignored_auth]  # authentication is asserted above, per signer
    # Unsigned, a schema-valid request is refused (401 above); a cursor is opaque, and only the server can
    # tell whether it gave one out: a well-formed cursor it did not give is a 400.
    if signer is None or "cursor" in (case.query or {}):
        excluded.append(checks.positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)


def _refused_for_its_shape(case: schemathesis.Case[Any], response: schemathesis.Response) -> None:
    """A request of the documented shape is never refused for its shape: the document and server agree.

    The query checker and the body schemas are the document's own, so a refusal naming a parameter (400)
    or a schema error (422 ``schema.invalid``) for a schema-valid case means they have drifted apart.
    A packet's manifest is also checked against the catalogue (field names, purposes), beyond any schema.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return
    problem = response.json()
    assert "parameter" not in problem, f"the document allows this query, the server refused it: {problem}"
    if case.path != "/v1/packets":
        assert problem.get("code") != "schema.invalid", f"the document allows this body, not the server: {problem}"


def test_every_packet_stored_during_the_fuzzing_is_one_the_rules_allow(live: _Live) -> None:
    """After the fuzzing, the store holds the seeded packets and those it accepted, each valid on its own terms.

    Every accepted generated packet's manifest is of the schema and catalogue, its signature verifies
    with its sender's key, and judged again by the sharing rules it breaks none; held (202) exactly
    when it shares without consent.
    """
    database = live.deployment.config.database_path
    # Read from the file itself, not through the store under test: nothing may have got in any other way.
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        stored = {row[0]: (row[1], bytes(row[2])) for row in db.execute("SELECT id, manifest, signature FROM packets")}
    assert set(stored) == set(live.real["packet_id"]) | set(live.accepted)
    by_member = {c.member_id: c for c in live.credentials.values()}
    for packet_id, status in live.accepted.items():
        manifest = json.loads(stored[packet_id][0])
        sender = by_member[manifest["sender"]["member"]]
        crypto.verify_manifest_signature(manifest, stored[packet_id][1], sender.signing.public_bytes)
        decision = live.run(_judge_again(live, manifest))
        assert decision.accepted, (packet_id, [v.rule for v in decision.violations])
        assert (status == 202) == (decision.outcome == "awaiting_approval"), (packet_id, status, decision.outcome)


async def _judge_again(live: _Live, manifest: dict[str, Any]) -> policy.Decision:
    """The sharing rules' verdict on a stored manifest now, as the server reached it at submission."""
    ctx = live.deployment.server.app[CONTEXT]
    agencies = {}
    for recipient in manifest["recipients"]:
        agency = await ctx.store.get_agency(recipient["agency"])
        assert agency is not None
        agencies[recipient["member"]] = agency
    sender, _ = await actor_for_key(ctx, manifest["sender"]["signing_key"], ctx.clock())
    context = await sharing_context(ctx, sender, manifest, agencies, approval_attached=False, stage="submission")
    return policy.evaluate(manifest, context, ctx.catalogue)
