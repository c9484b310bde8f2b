"""The authorization matrix (exchange/web/authorization.py), every cell asserted against one live server.

One module-wide world (a real server on a real socket, the demo directory plus a practitioner in
each of the school and children's social care) is built once; each rule of the matrix is then tried
by every party. An allowed cell must really succeed: a valid request signed by the SDK, answered 2xx,
its result checked (the packet opens, the proof verifies, the listing holds the resource). A denied
cell must get exactly the status the matrix says and change nothing in the store. A hidden cell
(404) must also answer exactly as the same call about a resource that does not exist. Every GET is
tried again as HEAD. Each mutating rule takes a fresh resource for each allowed party; its denied
parties all try the first one, which the first allowed party then uses: so it was still untouched.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange.web import authorization
from exchange.web.app import build_app
from exchange.web.authorization import MEMBERS, RULES, Outcome, Rule
from exchange.web.keys import CONTEXT
from tests.authz_probes import PROBES
from tests.authz_world import PLAYED_BY, Answer, World, build_world
from tests.conftest import make_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "authorization.md"
REGENERATE = "python -m exchange.web.authorization docs/authorization.md"


# ---------------------------------------------------------------------------------------------- the run


def _said(answer: Answer) -> tuple[Any, ...]:
    """What a problem tells its reader (not the request's own path and id)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return (answer.status, body.get("code"), body.get("title"), body.get("detail"))


def _expected_ok(outcome: Outcome) -> bool:
    return outcome in (Outcome.ALLOW, Outcome.OWN)


def _matches(outcome: Outcome, answer: Answer) -> bool:
    if _expected_ok(outcome):
        return answer.ok
    return not answer.ok and str(answer.status) == outcome.value


async def _try_rule(w: World, rule: Rule) -> list[str]:
    """Every cell of ``rule``, tried; what did not go as the matrix says."""
    found: list[str] = []
    spec = PROBES[rule.name]
    res = await spec.resource(w)
    path = spec.path(w, res)

    # Unauthenticated callers, and the operator's only key on the server (the server's own): no identity.
    for party, key in (("anonymous", None), ("operator", w.deployment.server.app[CONTEXT].server_key)):
        expected = rule.outcome(party)
        wanted = Outcome.UNAUTHENTICATED if expected is Outcome.OFFLINE else expected
        answer = await w.raw(rule.method, path, key=key)
        if not _matches(wanted, answer):
            found.append(f"{party}: expected {wanted.value}, got {answer.shows()}")

    denied = [p for p in MEMBERS if not _expected_ok(rule.outcome(p))]
    allowed = [p for p in MEMBERS if _expected_ok(rule.outcome(p))]
    for party in denied:
        expected = rule.outcome(party)
        before = w.fingerprint()
        answer = await w.attempt(spec.call(w, party, res))
        if not _matches(expected, answer):
            found.append(f"{party}: expected {expected.value}, got {answer.shows()}")
        elif expected is Outcome.HIDDEN and spec.ghost is not None:
            # Hidden means the same answer as for a resource that does not exist, word for word.
            ghost = await w.attempt(spec.call(w, party, spec.ghost(w)))
            if _said(ghost) != _said(answer):
                found.append(f"{party}: a hidden resource answers {_said(answer)}, a missing one {_said(ghost)}")
        if rule.method == "GET":
            head = await w.attempt(w.client(party).request("HEAD", path))
            head_status = int(expected.value) if rule.head else 405
            if head.ok or head.status != head_status:
                found.append(f"{party}: HEAD got {head.shows()}, expected {head_status}")
        if w.fingerprint() != before:
            found.append(f"{party}: a refused request changed the store")

    for i, party in enumerate(allowed):
        expected = rule.outcome(party)
        target = res if i == 0 or not spec.fresh else await spec.resource(w)
        before = w.fingerprint() if rule.method == "POST" else ""
        answer = await w.attempt(spec.call(w, party, target))
        if not answer.ok:
            found.append(f"{party}: expected {expected.value}, got {answer.shows()}")
            continue
        if before and w.fingerprint() == before:
            # The fingerprint that finds refused calls harmless must see what an allowed one changed.
            found.append(f"{party}: an allowed change left no trace in the store's fingerprint")
        try:
            listed = await spec.check(w, party, target, answer.body)
        except AssertionError as error:
            found.append(f"{party}: answered 2xx but did not do its work ({error})")
            continue
        if listed is not None and listed is not (expected is Outcome.ALLOW):
            found.append(f"{party}: expected {expected.value}, but the resource is {'' if listed else 'not '}listed")
        if rule.method == "GET":
            head = await w.attempt(w.client(party).request("HEAD", spec.path(w, target)))
            if head.ok is not rule.head or (not rule.head and head.status != 405):
                found.append(f"{party}: HEAD got {head.shows()}, expected {'2xx' if rule.head else 405}")
    return found


@dataclass(frozen=True)
class MatrixRun:
    failures: dict[str, list[str]]


async def _run_matrix(root: Path) -> MatrixRun:
    failures: dict[str, list[str]] = {}
    async with AsyncExitStack() as stack:
        w = await build_world(root, stack)
        for rule in RULES:
            try:
                failures[rule.name] = await _try_rule(w, rule)
            except Exception as error:  # noqa: BLE001 - one broken probe must not hide the other rules
                failures[rule.name] = [f"the probe itself failed: {type(error).__name__}: {error}"]
    return MatrixRun(failures)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> MatrixRun:
    """The whole matrix tried once against one live server; each rule's test reads its own cells."""
    return asyncio.run(_run_matrix(tmp_path_factory.mktemp("authz")))


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_party_gets_what_the_matrix_says(matrix: MatrixRun, rule: Rule) -> None:
    """Each party's call on this route is answered as the matrix says, and a refused call changes nothing."""
    assert matrix.failures[rule.name] == []


# ---------------------------------------------------------------------------------------------- completeness


def _app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = build_app(make_config(tmp_path))
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}


def test_every_route_of_the_app_has_a_rule(tmp_path: Path) -> None:
    """A route added to the app without a row in the matrix fails here (HEAD is aiohttp's twin of a GET,
    served where the rule says so)."""
    routes = _app_routes(tmp_path)
    heads = {path for method, path in routes if method == "HEAD"}
    assert heads == {rule.path for rule in RULES if rule.method == "GET" and rule.head}
    served = {(m, p) for m, p in routes if m != "HEAD"}
    specified = {rule.route for rule in RULES}
    assert served - specified == set(), "routes with no rule"
    assert specified - served == set(), "rules for routes the app no longer has"


def test_every_rule_names_every_party_and_has_a_probe() -> None:
    """Each row has a cell for each column and a probe to try it; row names are unique."""
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert set(rule.cells) == set(authorization.PARTY_KEYS), rule.name
    assert set(PROBES) == set(names)
    for party in authorization.PARTIES:
        if party.key in PLAYED_BY:  # the docs say who plays each column as the test has it
            assert party.played_by.startswith(PLAYED_BY[party.key] + ","), party


def test_the_docs_table_is_the_matrix() -> None:
    """docs/authorization.md holds the matrix as generated from exchange/web/authorization.py."""
    text = DOCS.read_text(encoding="utf-8")
    assert authorization.update_document(text) == text, f"regenerate it: {REGENERATE}"
