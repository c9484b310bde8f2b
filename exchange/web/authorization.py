"""The authorization matrix: for every route and every party, what SHOULD happen, as data.

This is the specification, not the enforcement: the service layer decides (``exchange/service``),
``tests/test_authorization.py`` asserts every cell of this table against a live server, and
``docs/authorization.md`` holds :func:`markdown_table` (checked by the same test file, so the three
never drift). A route added to the app without a row here fails that test.

The columns are *relationships to the row's resource* (a packet, a request, an escalation, a key,
a ledger entry), each played in the test by one member of the demo directory. The sender made the
resource: sent the packet, asked the request, recorded the decision, owns the key, waits for the
overdue step. The recipient is who it is addressed to: the packet's recipient, the request's holder,
the member who owes the overdue step. For a route that creates something (``POST /v1/packets``),
every party tries it in their own name.

It follows least privilege (DESIGN.md sections 2 and 7): only recipients fetch a packet's content;
only managers and safeguarding leads of the sender's agency see and decide its approval; auditors
read the ledger but no content; agency admins manage their own agency's members and nothing else;
keys change only by their owner; and what a member is not party to is hidden (404, the answer for
something that does not exist) rather than refused (403, which would confirm it exists). A 403 is
for a role that can never do the thing, whatever the resource.

The operator has no API identity at all: they work on the server itself, offline, with
``exchange init``, ``exchange agencies purposes`` and ``exchange operator register`` (the only way
to grant the auditor role). Their column reads "offline only"; the test checks that a request
signed with the one key the operator holds on the server, the server's own, is refused (401).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Outcome(StrEnum):
    """What one party gets from one route."""

    #: 2xx, and the call really did its work (a listing shows the row's resource).
    ALLOW = "allow"
    #: 2xx, but a listing of the caller's own items only: the row's resource is not in it.
    OWN = "own"
    #: 401: the request is not signed by a current member key.
    UNAUTHENTICATED = "401"
    #: 403: the caller's role can never do this, whatever the resource.
    FORBIDDEN = "403"
    #: 404: the caller is not a party to the resource, so it is hidden (the same answer as for none).
    HIDDEN = "404"
    #: No API identity: the operator works offline on the server.
    OFFLINE = "offline"


#: How each outcome reads in the table.
SYMBOLS: Mapping[Outcome, str] = {
    Outcome.ALLOW: "✓",
    Outcome.OWN: "own",
    Outcome.UNAUTHENTICATED: "401",
    Outcome.FORBIDDEN: "403",
    Outcome.HIDDEN: "404",
    Outcome.OFFLINE: "offline only",
}


@dataclass(frozen=True)
class Party:
    """A column: a relationship to the row's resource, and who plays it in the test."""

    key: str
    header: str
    played_by: str


PARTIES: tuple[Party, ...] = (
    Party("anonymous", "unauthenticated", "anyone: no signature"),
    Party("sender", "sender", "school-dsl, the school's safeguarding lead (also a practitioner)"),
    Party("sender_colleague", "practitioner, same agency", "school-teacher, a practitioner of the sender's agency"),
    Party("sender_manager", "manager, same agency", "school-head, a manager of the sender's agency"),
    Party("sender_admin", "admin, same agency", "school-admin, the sender's agency admin"),
    Party("recipient", "recipient", "csc-duty, a practitioner of children's social care"),
    Party("non_recipient", "non-recipient", "csc-worker, a practitioner of the recipient's agency it was not sent to"),
    Party(
        "other_manager",
        "manager, other agency",
        "csc-manager, manager and safeguarding lead of the recipient's agency",
    ),
    Party("other_practitioner", "practitioner, other agency", "police-officer, of an agency not involved"),
    Party("other_admin", "admin, other agency", "csc-admin, the recipient's agency admin"),
    Party("auditor", "auditor", "auditor, of the safeguarding partnership"),
    Party("operator", "operator", "the deployment's operator, on the server"),
)

PARTY_KEYS: tuple[str, ...] = tuple(p.key for p in PARTIES)
#: Parties that are members, with an API identity.
MEMBERS: tuple[str, ...] = tuple(k for k in PARTY_KEYS if k not in ("anonymous", "operator"))
#: Members with a role that sends and receives (practitioner, manager, safeguarding lead).
SHARING: tuple[str, ...] = (
    "sender",
    "sender_colleague",
    "sender_manager",
    "recipient",
    "non_recipient",
    "other_manager",
    "other_practitioner",
)
#: Members with a role that approves sharing without consent (manager, safeguarding lead).
APPROVERS: tuple[str, ...] = ("sender", "sender_manager", "other_manager")


@dataclass(frozen=True)
class Rule:
    """A row: one route (or one variant of it), the resource it is tried on, and every party's outcome."""

    method: str
    path: str
    resource: str
    cells: Mapping[str, Outcome]
    #: Tells apart two rows of one route (a query parameter, a role granted); empty for the plain call.
    variant: str = ""
    #: Whether a GET also answers HEAD, alike (aiohttp's default); not where a GET has an effect.
    head: bool = True

    @property
    def route(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}" + (f" ({self.variant})" if self.variant else "")

    def outcome(self, party: str) -> Outcome:
        return self.cells[party]


def _rule(
    method: str,
    path: str,
    resource: str,
    *,
    others: Outcome,
    variant: str = "",
    head: bool = True,
    allow: tuple[str, ...] = (),
    own: tuple[str, ...] = (),
    forbidden: tuple[str, ...] = (),
    hidden: tuple[str, ...] = (),
) -> Rule:
    """A row whose members get ``others`` unless named; unauthenticated callers get 401 and the operator
    has no API identity, on every ``/v1/`` route."""
    cells: dict[str, Outcome] = {"anonymous": Outcome.UNAUTHENTICATED, "operator": Outcome.OFFLINE}
    cells |= dict.fromkeys(MEMBERS, others)
    for outcome, named in (
        (Outcome.ALLOW, allow),
        (Outcome.OWN, own),
        (Outcome.FORBIDDEN, forbidden),
        (Outcome.HIDDEN, hidden),
    ):
        for party in named:
            if party not in MEMBERS:
                raise ValueError(f"{party!r} is not a member party")
            cells[party] = outcome
    return Rule(method, path, resource, cells, variant, head)


_ALLOW, _OWN, _403, _404 = Outcome.ALLOW, Outcome.OWN, Outcome.FORBIDDEN, Outcome.HIDDEN
_PACKET = "a packet the sender sent to the recipient"
_LEDGER = "the ledger (auditors only; every read is itself recorded)"

RULES: tuple[Rule, ...] = (
    Rule(
        "GET",
        "/health",
        "liveness: reveals nothing, so it is public",
        dict.fromkeys(PARTY_KEYS, Outcome.ALLOW),
    ),
    _rule("GET", "/v1/me", "the caller's own member record", others=_ALLOW),
    _rule("GET", "/v1/directory", "the directory (the sender listed): what senders seal to", others=_ALLOW),
    _rule("GET", "/v1/agencies", "the agencies (the sender's listed), what each may send and receive", others=_ALLOW),
    _rule(
        "POST",
        "/v1/members",
        "a new practitioner of the sender's agency, with their own proof of possession",
        others=_403,
        allow=("sender_admin",),
    ),
    _rule(
        "POST",
        "/v1/members",
        "a new auditor in the sender's agency: only the operator grants it, offline",
        others=_403,
        variant="granting the auditor role",
    ),
    _rule(
        "POST",
        "/v1/members/{member_id}/keys",
        "a new signing key (with its proof) on the sender's account: only its owner adds keys",
        others=_403,
        allow=("sender",),
    ),
    _rule(
        "POST",
        "/v1/keys/{key_id}/revoke",
        "a current key of the sender's: revoking only takes power away, so their admin may too",
        others=_403,
        allow=("sender", "sender_admin"),
    ),
    _rule(
        "GET",
        "/v1/members/{member_id}/key-history",
        "the sender's key history with its proofs: any member checks the keys they seal to",
        others=_ALLOW,
    ),
    _rule(
        "POST",
        "/v1/packets",
        "a packet in the caller's own name (an anonymous consultation)",
        others=_403,
        allow=SHARING,
    ),
    _rule("GET", "/v1/inbox", f"the caller's inbox; is {_PACKET} in it?", others=_OWN, allow=("recipient",)),
    _rule("GET", "/v1/outbox", f"the caller's outbox; is {_PACKET} in it?", others=_OWN, allow=("sender",)),
    _rule(
        "GET",
        "/v1/packets/{packet_id}",
        f"{_PACKET}: its body and the caller's sealed key (no HEAD: the first fetch opens the copy)",
        others=_404,
        head=False,
        allow=("recipient",),
    ),
    _rule(
        "POST",
        "/v1/packets/{packet_id}/acknowledgement",
        f"{_PACKET}, delivered: a signed receipt",
        others=_404,
        allow=("recipient",),
    ),
    _rule(
        "GET",
        "/v1/packets/{packet_id}/loop",
        f"{_PACKET}: its feedback loop",
        others=_404,
        allow=("sender", "recipient"),
    ),
    _rule(
        "POST",
        "/v1/packets/{packet_id}/reports",
        f"{_PACKET}, acknowledged: the action taken",
        others=_404,
        allow=("recipient",),
        forbidden=("sender",),
    ),
    _rule(
        "POST",
        "/v1/packets/{packet_id}/recipients/{member_id}/review",
        f"{_PACKET}, actioned: the sender confirms the recipient's report",
        others=_404,
        allow=("sender",),
        forbidden=("recipient",),
    ),
    _rule(
        "POST",
        "/v1/packets/{packet_id}/recall",
        f"{_PACKET}, not yet opened",
        others=_404,
        allow=("sender",),
    ),
    _rule(
        "GET",
        "/v1/approvals",
        "the caller's agency's approval queue; is the sender's packet held for approval in it?",
        others=_403,
        allow=("sender", "sender_manager"),
        own=("other_manager",),
    ),
    _rule(
        "GET",
        "/v1/approvals/{packet_id}",
        "the sender's packet held for approval: its manifest, never its content",
        others=_403,
        allow=("sender", "sender_manager"),
        hidden=("other_manager",),
    ),
    _rule(
        "POST",
        "/v1/approvals/{packet_id}",
        "the sender's packet held for approval: a signed approval (nobody approves their own)",
        others=_403,
        allow=("sender_manager",),
        hidden=("other_manager",),
    ),
    _rule(
        "GET",
        "/v1/escalations",
        "the caller's escalations; is the overdue acknowledgement the recipient owes the sender in them?",
        others=_OWN,
        allow=("sender", "sender_manager", "recipient", "other_manager"),
    ),
    _rule(
        "POST",
        "/v1/escalations/{escalation_id}/acknowledgement",
        "the overdue acknowledgement the recipient owes the sender: seen by both, the sender's managers"
        " and the recipient agency's safeguarding lead",
        others=_404,
        allow=("sender", "sender_manager", "recipient", "other_manager"),
    ),
    _rule(
        "POST",
        "/v1/requests",
        "an information request in the caller's own name",
        others=_403,
        allow=SHARING,
    ),
    _rule(
        "GET",
        "/v1/requests",
        "the caller's requests; is the sender's request to the recipient in them?",
        others=_OWN,
        allow=("sender", "recipient"),
    ),
    _rule(
        "GET",
        "/v1/requests/{request_id}",
        "the sender's request to the recipient, with what is sealed to the caller",
        others=_404,
        allow=("sender", "recipient"),
    ),
    _rule(
        "POST",
        "/v1/requests/{request_id}/decline",
        "the sender's open request to the recipient: a signed decline",
        others=_404,
        allow=("recipient",),
        forbidden=("sender",),
    ),
    _rule(
        "POST",
        "/v1/decisions",
        "a decision not to share, in the caller's own name",
        others=_403,
        allow=SHARING,
    ),
    _rule(
        "GET",
        "/v1/decisions",
        "the caller's own decisions not to share; is the sender's in them?",
        others=_OWN,
        allow=("sender",),
    ),
    _rule(
        "GET",
        "/v1/decisions",
        "the caller's agency's decisions (codes, not the sealed reasons); is the sender's in them?",
        others=_403,
        variant="?scope=agency",
        allow=("sender", "sender_manager"),
        own=("other_manager",),
    ),
    _rule(
        "GET",
        "/v1/ledger/receipts/{seq}",
        "the ledger entry of the packet's delivery: a proof for those it concerns",
        others=_404,
        allow=("sender", "recipient", "auditor"),
    ),
    *(
        _rule("GET", path, _LEDGER, others=_403, allow=("auditor",))
        for path in (
            "/v1/ledger/head",
            "/v1/ledger/entries",
            "/v1/ledger/proof/inclusion",
            "/v1/ledger/proof/consistency",
            "/v1/ledger/export",
        )
    ),
    _rule(
        "GET",
        "/v1/ledger/subjects/{pseudonym}",
        "the ledger events about the packet's subject, by pseudonym",
        others=_403,
        allow=("auditor",),
    ),
    _rule(
        "GET",
        "/v1/ledger/subjects/{pseudonym}/export",
        "the same, exported with inclusion proofs",
        others=_403,
        allow=("auditor",),
    ),
)


def rules_for(method: str, path: str) -> list[Rule]:
    return [rule for rule in RULES if rule.route == (method, path)]


def markdown_table() -> str:
    """Every rule as a Markdown table (docs/authorization.md holds it, checked by a test)."""
    parties = list(PARTIES)
    lines = [
        "| route | tried on | " + " | ".join(p.header for p in parties) + " |",
        "|---|---|" + "---|" * len(parties),
    ]
    for rule in RULES:
        name = f"`{rule.method} {rule.path}`" + (f" ({rule.variant})" if rule.variant else "")
        cells = " | ".join(SYMBOLS[rule.outcome(p.key)] for p in parties)
        lines.append(f"| {name} | {rule.resource} | {cells} |")
    return "\n".join(lines)


def markdown_parties() -> str:
    """Who plays each column in the test, as a Markdown table."""
    lines = ["| column | played in the test by |", "|---|---|"]
    lines += [f"| {p.header} | {p.played_by} |" for p in PARTIES]
    return "\n".join(lines)


#: The generated parts of docs/authorization.md, each between ``<!-- NAME -->`` and ``<!-- /NAME -->``.
GENERATED: Mapping[str, Callable[[], str]] = {
    "authorization-parties": markdown_parties,
    "authorization-table": markdown_table,
}


def update_document(text: str) -> str:
    """``text`` with each generated part replaced by what the matrix says now (the rest left as written)."""
    for marker, generate in GENERATED.items():
        start = text.index("-->", text.index(f"<!-- {marker}")) + len("-->")
        end = text.index(f"<!-- /{marker} -->")
        text = text[:start] + "\n" + generate() + "\n" + text[end:]
    return text


if __name__ == "__main__":  # python -m exchange.web.authorization docs/authorization.md
    document = Path(sys.argv[1])
    document.write_text(update_document(document.read_text(encoding="utf-8")), encoding="utf-8")
