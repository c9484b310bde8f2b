"""How each rule of the authorization matrix is tried: one probe per rule, registered by name.

A probe says which path the rule's resource has (tried also unsigned, as the operator and as HEAD),
makes the call as a party the way the SDK would (its own methods where they do not first call
another route; otherwise the same signed document, built with the SDK's statement builders), and
checks an allowed answer: the packet opens, the proof verifies, the state moved, the listing holds
the resource. A mutating rule's probe makes a fresh resource for each allowed party; a hidden (404)
cell is compared with the same call on a resource that does not exist (``ghost``).
"""


from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from exchange import crypto, statements
from exchange.client import open_fetched
from exchange.domain import new_id
from exchange.examples import REFERRAL, consultation
from exchange.keyfile import MemberCredentials
from exchange.ledger.proofs import check_consistency_answer, check_inclusion_answer, checked_head
from exchange.ledger.verify import verify_export
from tests.authz_world import Sent, World


@dataclass(frozen=True)
class Probe:
    """How to try one rule as a party: the path (also tried unsigned, as the operator and as HEAD), the
    call, how to check an allowed answer (returning, for a listing, whether the resource is in it), a
    resource for the rule and (for a mutating rule) how to make another, and one that does not exist."""

    path: Callable[[World, Any], str]
    call: Callable[[World, str, Any], Awaitable[Any]]
    check: Callable[[World, str, Any, Any], Awaitable[bool | None]]
    resource: Callable[[World], Awaitable[Any]]
    fresh: bool = False
    ghost: Callable[[World], Any] | None = None


PROBES: dict[str, Probe] = {}


async def _nothing(w: World) -> None:
    return None


def probe(
    name: str,
    path: Callable[[World, Any], str],
    *,
    resource: Callable[[World], Awaitable[Any]] = _nothing,
    fresh: bool = False,
    ghost: Callable[[World], Any] | None = None,
) -> Callable[[Callable[[World, str, Any], Awaitable[Any]]], Callable[[World, str, Any], Awaitable[Any]]]:
    """Register the decorated call as the probe of rule ``name``; its ``check`` is registered with :func:`check`."""

    def register(call: Callable[[World, str, Any], Awaitable[Any]]) -> Callable[[World, str, Any], Awaitable[Any]]:
        PROBES[name] = Probe(path, call, _no_check, resource, fresh, ghost)
        return call

    return register


def check(name: str) -> Callable[[Callable[[World, str, Any, Any], Awaitable[bool | None]]], Any]:
    def register(fn: Callable[[World, str, Any, Any], Awaitable[bool | None]]) -> Any:
        PROBES[name] = replace(PROBES[name], check=fn)
        return fn

    return register


async def _no_check(w: World, party: str, res: Any, body: Any) -> bool | None:
    return None


def _ghost_packet(w: World) -> Sent:
    return Sent(new_id("pkt"), "sha256:" + "0" * 64)


async def _main_packet(w: World) -> Sent:
    return w.packet


# -- directory and keys


@probe("GET /health", lambda w, res: "/health")
async def _health(w: World, party: str, res: None) -> Any:
    return await w.client(party).health()


@check("GET /health")
async def _health_ok(w: World, party: str, res: None, body: Any) -> None:
    assert body["status"] in ("ok", "degraded")


@probe("GET /v1/me", lambda w, res: "/v1/me")
async def _me(w: World, party: str, res: None) -> Any:
    return await w.client(party).me()


@check("GET /v1/me")
async def _me_ok(w: World, party: str, res: None, body: Any) -> None:
    assert body["id"] == w.id(party)


@probe("GET /v1/directory", lambda w, res: "/v1/directory")
async def _directory(w: World, party: str, res: None) -> Any:
    return await w.client(party).directory_members()


@check("GET /v1/directory")
async def _directory_lists(w: World, party: str, res: None, body: Any) -> bool:
    return w.id("sender") in {m["id"] for m in body}


@probe("GET /v1/agencies", lambda w, res: "/v1/agencies")
async def _agencies(w: World, party: str, res: None) -> Any:
    return await w.client(party).agencies()


@check("GET /v1/agencies")
async def _agencies_list(w: World, party: str, res: None, body: Any) -> bool:
    return w.agency("sender") in {a["id"] for a in body}


def _register(roles: list[str]) -> Callable[[World, str, None], Awaitable[Any]]:
    async def call(w: World, party: str, res: None) -> Any:
        enrolment = MemberCredentials.generate()
        return await w.client(party).register_member(w.agency("sender"), "Pat Newcomer", roles, enrolment)

    return call


probe("POST /v1/members", lambda w, res: "/v1/members")(_register(["practitioner"]))
probe("POST /v1/members (granting the auditor role)", lambda w, res: "/v1/members")(_register(["auditor"]))


@check("POST /v1/members")
async def _registered(w: World, party: str, res: None, body: Any) -> None:
    assert body["agency"] == w.agency("sender") and body["roles"] == ["practitioner"]
    assert [k["use"] for k in body["keys"]] == ["signing", "encryption"]


@probe("POST /v1/members/{member_id}/keys", lambda w, res: f"/v1/members/{w.id('sender')}/keys")
async def _add_key(w: World, party: str, res: None) -> Any:
    """Every party brings a key of their own making with its proof, naming the sender's account."""
    key = crypto.SigningKey.generate()
    proof = key.sign(statements.new_key_statement(w.id("sender"), key.key_id, "signing"))
    document = {"use": "signing", "public": crypto.b64encode(key.public_bytes), "proof": crypto.b64encode(proof)}
    added = await w.client(party).request("POST", f"/v1/members/{w.id('sender')}/keys", document)
    return {"added": added, "key_id": key.key_id}


@check("POST /v1/members/{member_id}/keys")
async def _key_added(w: World, party: str, res: None, body: Any) -> None:
    assert body["added"]["key_id"] == body["key_id"]
    history = await w.client("sender").key_history(w.id("sender"))
    # The new key may wait for the next signed head; it is in the ledger either way.
    assert body["key_id"] in history.keys or history.pending


async def _sender_key(w: World) -> str:
    return await w.sender_key()


@probe("POST /v1/keys/{key_id}/revoke", lambda w, key: f"/v1/keys/{key}/revoke", resource=_sender_key, fresh=True)
async def _revoke(w: World, party: str, key: str) -> Any:
    return await w.client(party).revoke_key(key)


@check("POST /v1/keys/{key_id}/revoke")
async def _revoked(w: World, party: str, key: str, body: Any) -> None:
    assert body["key_id"] == key and body["revoked_at"]


@probe("GET /v1/members/{member_id}/key-history", lambda w, res: f"/v1/members/{w.id('sender')}/key-history")
async def _key_history(w: World, party: str, res: None) -> Any:
    return await w.client(party).key_history(w.id("sender"))


@check("GET /v1/members/{member_id}/key-history")
async def _history_proved(w: World, party: str, res: None, history: Any) -> None:
    # check_key_history (in the SDK) verified every proof; the sender's request key is among the keys.
    assert w.creds["sender"].signing.key_id in history.keys


# -- packets


@probe("POST /v1/packets", lambda w, res: "/v1/packets")
async def _submit(w: World, party: str, res: None) -> Any:
    to = "recipient" if party == "other_practitioner" else "other_practitioner"
    return await w.client(party).send(consultation([w.id(to)]))


@check("POST /v1/packets")
async def _submitted(w: World, party: str, res: None, body: Any) -> None:
    assert body["status"] == "delivered" and w.packet_state(body["packet_id"]) == "delivered"


@probe("GET /v1/inbox", lambda w, res: "/v1/inbox", resource=_main_packet)
async def _inbox(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).inbox()


@check("GET /v1/inbox")
async def _in_inbox(w: World, party: str, sent: Sent, body: Any) -> bool:
    return sent.packet_id in {p["packet_id"] for p in body}


@probe("GET /v1/outbox", lambda w, res: "/v1/outbox", resource=_main_packet)
async def _outbox(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).outbox()


@check("GET /v1/outbox")
async def _in_outbox(w: World, party: str, sent: Sent, body: Any) -> bool:
    return sent.packet_id in {p["packet_id"] for p in body}


@probe(
    "GET /v1/packets/{packet_id}",
    lambda w, sent: f"/v1/packets/{sent.packet_id}",
    resource=_main_packet,
    ghost=_ghost_packet,
)
async def _fetch(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).request("GET", f"/v1/packets/{sent.packet_id}")


@check("GET /v1/packets/{packet_id}")
async def _opens(w: World, party: str, sent: Sent, fetched: Any) -> None:
    opened = open_fetched(fetched, w.creds[party])  # the signature verifies and the body decrypts
    values = {f["name"]: f["value"] for f in opened.body["fields"]}
    assert values["child_name"] == REFERRAL["fields"]["child_name"]["value"]


async def _delivered(w: World) -> Sent:
    return await w.delivered()


@probe(
    "POST /v1/packets/{packet_id}/acknowledgement",
    lambda w, sent: f"/v1/packets/{sent.packet_id}/acknowledgement",
    resource=_delivered,
    fresh=True,
    ghost=_ghost_packet,
)
async def _acknowledge(w: World, party: str, sent: Sent) -> Any:
    """The receipt the SDK's ``acknowledge`` sends, signed by the caller over the packet's digest."""
    signing = w.creds[party].signing
    statement = statements.acknowledgement_statement(sent.packet_id, sent.digest, w.id(party))
    document = {"key_id": signing.key_id, "signature": crypto.b64encode(signing.sign(statement))}
    return await w.client(party).request("POST", f"/v1/packets/{sent.packet_id}/acknowledgement", document)


@check("POST /v1/packets/{packet_id}/acknowledgement")
async def _acknowledged(w: World, party: str, sent: Sent, body: Any) -> None:
    assert body["packet_id"] == sent.packet_id and w.delivery_state(sent.packet_id, party) == "acknowledged"


@probe(
    "GET /v1/packets/{packet_id}/loop",
    lambda w, sent: f"/v1/packets/{sent.packet_id}/loop",
    resource=_main_packet,
    ghost=_ghost_packet,
)
async def _loop(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).loop(sent.packet_id)


@check("GET /v1/packets/{packet_id}/loop")
async def _loop_verified(w: World, party: str, sent: Sent, loop: Any) -> None:
    # verify_loop (in the SDK) checked the manifest's signature and digest; each party sees the recipient.
    assert loop.manifest_digest == sent.digest
    assert [r.member for r in loop.recipients] == [w.id("recipient")]


async def _acknowledged_packet(w: World) -> Sent:
    return await w.acknowledged()


@probe(
    "POST /v1/packets/{packet_id}/reports",
    lambda w, sent: f"/v1/packets/{sent.packet_id}/reports",
    resource=_acknowledged_packet,
    fresh=True,
    ghost=_ghost_packet,
)
async def _report(w: World, party: str, sent: Sent) -> Any:
    """The report the SDK's ``report`` sends (no narrative), signed by the caller as its author."""
    signing = w.creds[party].signing
    action = "child_in_need_assessment_s17"
    statement = statements.loop_statement(
        "report", sent.packet_id, sent.digest, w.id(party), w.id(party), action=action, answers=None
    )
    document = {
        "action": action,
        "answers": None,
        "key_id": signing.key_id,
        "signature": crypto.b64encode(signing.sign(statement)),
    }
    return await w.client(party).request("POST", f"/v1/packets/{sent.packet_id}/reports", document)


@check("POST /v1/packets/{packet_id}/reports")
async def _reported(w: World, party: str, sent: Sent, body: Any) -> None:
    assert body["status"] == "action_reported" and w.delivery_state(sent.packet_id, party) == "action_reported"


async def _reported_packet(w: World) -> tuple[Sent, str]:
    return await w.reported()


@probe(
    "POST /v1/packets/{packet_id}/recipients/{member_id}/review",
    lambda w, res: f"/v1/packets/{res[0].packet_id}/recipients/{w.id('recipient')}/review",
    resource=_reported_packet,
    fresh=True,
    ghost=lambda w: (_ghost_packet(w), "stm_" + "0" * 40),
)
async def _review(w: World, party: str, res: tuple[Sent, str]) -> Any:
    """The confirmation the SDK's ``confirm`` sends, signed by the caller over the recipient's latest report."""
    sent, report = res
    signing = w.creds[party].signing
    statement = statements.loop_statement(
        "confirm", sent.packet_id, sent.digest, w.id("recipient"), w.id(party), answers=report
    )
    document = {
        "decision": "confirm",
        "answers": report,
        "key_id": signing.key_id,
        "signature": crypto.b64encode(signing.sign(statement)),
    }
    path = f"/v1/packets/{sent.packet_id}/recipients/{w.id('recipient')}/review"
    return await w.client(party).request("POST", path, document)


@check("POST /v1/packets/{packet_id}/recipients/{member_id}/review")
async def _confirmed(w: World, party: str, res: tuple[Sent, str], body: Any) -> None:
    assert body["status"] == "confirmed" and w.delivery_state(res[0].packet_id, "recipient") == "confirmed"


@probe(
    "POST /v1/packets/{packet_id}/recall",
    lambda w, sent: f"/v1/packets/{sent.packet_id}/recall",
    resource=_delivered,
    fresh=True,
    ghost=_ghost_packet,
)
async def _recall(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).recall(sent.packet_id, "sent_to_wrong_recipient")


@check("POST /v1/packets/{packet_id}/recall")
async def _recalled(w: World, party: str, sent: Sent, body: Any) -> None:
    assert body["status"] == "recalled" and w.packet_state(sent.packet_id) == "recalled"


# -- approvals


async def _held(w: World) -> Sent:
    return w.held


@probe("GET /v1/approvals", lambda w, res: "/v1/approvals", resource=_held)
async def _queue(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).request("GET", "/v1/approvals?limit=1000")


@check("GET /v1/approvals")
async def _queued(w: World, party: str, sent: Sent, body: Any) -> bool:
    return sent.packet_id in {p["packet_id"] for p in body["packets"]}


@probe(
    "GET /v1/approvals/{packet_id}",
    lambda w, sent: f"/v1/approvals/{sent.packet_id}",
    resource=_held,
    ghost=_ghost_packet,
)
async def _approval_item(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).request("GET", f"/v1/approvals/{sent.packet_id}")


@check("GET /v1/approvals/{packet_id}")
async def _item_shown(w: World, party: str, sent: Sent, body: Any) -> None:
    assert body["manifest_digest"] == sent.digest and crypto.manifest_digest(body["manifest"]) == sent.digest
    assert "body" not in body and "sealed_key" not in body


async def _awaiting(w: World) -> Sent:
    return await w.awaiting_approval()


@probe(
    "POST /v1/approvals/{packet_id}",
    lambda w, sent: f"/v1/approvals/{sent.packet_id}",
    resource=_awaiting,
    fresh=True,
    ghost=_ghost_packet,
)
async def _decide(w: World, party: str, sent: Sent) -> Any:
    client = w.client(party)
    return await client.request(
        "POST", f"/v1/approvals/{sent.packet_id}", client.approval_for(sent.packet_id, sent.digest)
    )


@check("POST /v1/approvals/{packet_id}")
async def _approved(w: World, party: str, sent: Sent, body: Any) -> None:
    assert body["status"] == "delivered" and w.delivery_state(sent.packet_id, "recipient") == "delivered"


# -- escalations


async def _listed_escalation(w: World) -> str:
    return w.escalation


@probe("GET /v1/escalations", lambda w, res: "/v1/escalations", resource=_listed_escalation)
async def _escalations(w: World, party: str, escalation: str) -> Any:
    return await w.client(party).every("/v1/escalations", "escalations")


@check("GET /v1/escalations")
async def _escalation_listed(w: World, party: str, escalation: str, body: Any) -> bool:
    return escalation in {e["escalation_id"] for e in body}


async def _escalation(w: World) -> str:
    return await w.fresh_escalation()


@probe(
    "POST /v1/escalations/{escalation_id}/acknowledgement",
    lambda w, escalation: f"/v1/escalations/{escalation}/acknowledgement",
    resource=_escalation,
    fresh=True,
    ghost=lambda w: new_id("esc"),
)
async def _acknowledge_escalation(w: World, party: str, escalation: str) -> Any:
    return await w.client(party).acknowledge_escalation(escalation)


@check("POST /v1/escalations/{escalation_id}/acknowledgement")
async def _escalation_acknowledged(w: World, party: str, escalation: str, body: Any) -> None:
    assert body["escalation_id"] == escalation and body["acknowledged_by"] == w.id(party)


# -- requests and decisions


@probe("POST /v1/requests", lambda w, res: "/v1/requests")
async def _ask(w: World, party: str, res: None) -> Any:
    holder = "other_practitioner" if w.agency(party) == w.agency("recipient") else "recipient"
    return await w.client(party).request_information(
        {
            "purpose": "strategy_discussion",
            "from": w.id(holder),
            "urgency": "urgent",
            "lawful_basis": {"article6": "public_task", "legal_power": ["children_act_1989_s47"]},
            "fields": ["household_members"],
            "details": {"child_name": "Jamie Example"},
        }
    )


@check("POST /v1/requests")
async def _asked(w: World, party: str, res: None, body: Any) -> None:
    assert body["state"] == "open" and body["request_id"].startswith("req_")


async def _main_request(w: World) -> str:
    return w.request_id


@probe("GET /v1/requests", lambda w, res: "/v1/requests", resource=_main_request)
async def _requests(w: World, party: str, request_id: str) -> Any:
    return await w.client(party).every("/v1/requests", "requests")


@check("GET /v1/requests")
async def _request_listed(w: World, party: str, request_id: str, body: Any) -> bool:
    return request_id in {r["request_id"] for r in body}


@probe(
    "GET /v1/requests/{request_id}",
    lambda w, request_id: f"/v1/requests/{request_id}",
    resource=_main_request,
    ghost=lambda w: new_id("req"),
)
async def _show_request(w: World, party: str, request_id: str) -> Any:
    return await w.client(party).open_request(request_id)


@check("GET /v1/requests/{request_id}")
async def _request_opened(w: World, party: str, request_id: str, opened: Any) -> None:
    # open_request (in the SDK) verified the requester's signature; the holder opened the sealed details.
    assert opened.request_id == request_id
    if party == "recipient":
        assert opened.details == {"child_name": "Jamie Example", "why": "A strategy discussion is convened tomorrow."}
    else:
        assert opened.details is None


async def _fresh_request(w: World) -> dict[str, Any]:
    return await w.open_request()


@probe(
    "POST /v1/requests/{request_id}/decline",
    lambda w, request: f"/v1/requests/{request['request_id']}/decline",
    resource=_fresh_request,
    fresh=True,
    ghost=lambda w: {"request_id": new_id("req")},
)
async def _decline(w: World, party: str, request: dict[str, Any]) -> Any:
    """The decline the SDK's ``decline`` sends: reasons, an explanation sealed to the requester, signed."""
    request_id = request["request_id"]
    requester = w.creds["sender"].encryption
    sealed = crypto.seal_note(
        {"request_id": request_id, "explanation": "We hold nothing on this household."},
        w.id("sender"),
        requester.key_id,
        requester.public_bytes,
        context=statements.decline_note_context(request_id),
    )
    reasons = ["information_not_held"]
    statement = statements.decline_statement(
        request_id,
        statements.request_digest(request) if "version" in request else "sha256:" + "0" * 64,
        w.id(party),
        reasons,
        note_digest=crypto.digest_text(sealed),
        note_key=requester.key_id,
    )
    signing = w.creds[party].signing
    document = {
        "key_id": signing.key_id,
        "reason_codes": reasons,
        "explanation": {"encryption_key": requester.key_id, "sealed": crypto.b64encode(sealed)},
        "signature": crypto.b64encode(signing.sign(statement)),
    }
    return await w.client(party).request("POST", f"/v1/requests/{request_id}/decline", document)


@check("POST /v1/requests/{request_id}/decline")
async def _declined(w: World, party: str, request: dict[str, Any], body: Any) -> None:
    assert body["state"] == "declined"
    opened = await w.client("sender").open_request(request["request_id"])
    assert opened.explanation == "We hold nothing on this household."


@probe("POST /v1/decisions", lambda w, res: "/v1/decisions")
async def _decide_not_to_share(w: World, party: str, res: None) -> Any:
    return await w.record_decision(party)


@check("POST /v1/decisions")
async def _decision_recorded(w: World, party: str, res: None, body: Any) -> None:
    assert body["delivered_to"] == [] and body["decision_id"].startswith("dns_")


async def _main_decision(w: World) -> str:
    return w.decision_id


@probe("GET /v1/decisions", lambda w, res: "/v1/decisions", resource=_main_decision)
async def _decisions(w: World, party: str, decision_id: str) -> Any:
    return await w.client(party).decisions()


@probe("GET /v1/decisions (?scope=agency)", lambda w, res: "/v1/decisions?scope=agency", resource=_main_decision)
async def _agency_decisions(w: World, party: str, decision_id: str) -> Any:
    return await w.client(party).decisions("agency")


async def _decision_listed(w: World, party: str, decision_id: str, body: Any) -> bool:
    listed = {d["decision_id"]: d for d in body["decisions"]}
    if decision_id in listed:
        # Only the author opens the reasons in words; a manager sees the codes.
        words = listed[decision_id].get("reasons_in_words")
        assert (words is not None) is (party == "sender"), words
    return decision_id in listed


check("GET /v1/decisions")(_decision_listed)
check("GET /v1/decisions (?scope=agency)")(_decision_listed)


# -- the ledger


async def _delivered_entry(w: World) -> int:
    return w.delivered_seq


@probe(
    "GET /v1/ledger/receipts/{seq}",
    lambda w, seq: f"/v1/ledger/receipts/{seq}",
    resource=_delivered_entry,
    ghost=lambda w: 10**12,
)
async def _receipt(w: World, party: str, seq: int) -> Any:
    return await w.client(party).receipt(seq, w.deployment.server_public_key)


@check("GET /v1/ledger/receipts/{seq}")
async def _receipt_proved(w: World, party: str, seq: int, body: Any) -> None:
    answer, head = body  # the SDK verified the proof and the head's signature
    entry = json.loads(crypto.b64decode(answer["entry"], what="entry"))
    assert entry["type"] == "packet.delivered" and entry["packet"] == w.packet.packet_id and head.size > seq


@probe("GET /v1/ledger/head", lambda w, res: "/v1/ledger/head")
async def _head(w: World, party: str, res: None) -> Any:
    return await w.client(party).request("GET", "/v1/ledger/head")


@check("GET /v1/ledger/head")
async def _head_signed(w: World, party: str, res: None, body: Any) -> None:
    assert checked_head(body["head"], w.deployment.server_public_key).size <= body["ledger_size"]


@probe("GET /v1/ledger/entries", lambda w, res: "/v1/ledger/entries", resource=_main_packet)
async def _entries(w: World, party: str, sent: Sent) -> Any:
    return await w.client(party).request("GET", f"/v1/ledger/entries?packet={sent.packet_id}")


@check("GET /v1/ledger/entries")
async def _entries_found(w: World, party: str, sent: Sent, body: Any) -> None:
    assert "packet.submitted" in {e["entry"]["type"] for e in body["entries"]}


@probe(
    "GET /v1/ledger/proof/inclusion",
    lambda w, seq: f"/v1/ledger/proof/inclusion?seq={seq}",
    resource=_delivered_entry,
)
async def _inclusion(w: World, party: str, seq: int) -> Any:
    return await w.client(party).request("GET", f"/v1/ledger/proof/inclusion?seq={seq}")


@check("GET /v1/ledger/proof/inclusion")
async def _included(w: World, party: str, seq: int, body: Any) -> None:
    assert check_inclusion_answer(body, w.deployment.server_public_key).size > seq


async def _early_head(w: World) -> int:
    return w.early_head


@probe(
    "GET /v1/ledger/proof/consistency",
    lambda w, size: f"/v1/ledger/proof/consistency?from={size}",
    resource=_early_head,
)
async def _consistency(w: World, party: str, size: int) -> Any:
    return await w.client(party).request("GET", f"/v1/ledger/proof/consistency?from={size}")


@check("GET /v1/ledger/proof/consistency")
async def _consistent(w: World, party: str, size: int, body: Any) -> None:
    old, new = check_consistency_answer(body, w.deployment.server_public_key)
    assert old.size == size <= new.size


@probe("GET /v1/ledger/export", lambda w, res: "/v1/ledger/export")
async def _export(w: World, party: str, res: None) -> Any:
    return await w.client(party).request_text("GET", "/v1/ledger/export")


@check("GET /v1/ledger/export")
async def _exported(w: World, party: str, res: None, text: Any) -> None:
    verify_export(text.splitlines(), w.deployment.server_public_key)


async def _subject(w: World) -> str:
    return w.pseudonym


@probe("GET /v1/ledger/subjects/{pseudonym}", lambda w, p: f"/v1/ledger/subjects/{p}", resource=_subject)
async def _subject_view(w: World, party: str, pseudonym: str) -> Any:
    return await w.client(party).subject(pseudonym)


@check("GET /v1/ledger/subjects/{pseudonym}")
async def _subject_found(w: World, party: str, pseudonym: str, body: Any) -> None:
    assert w.packet.packet_id in {p["packet_id"] for p in body["packets"]}


@probe("GET /v1/ledger/subjects/{pseudonym}/export", lambda w, p: f"/v1/ledger/subjects/{p}/export", resource=_subject)
async def _subject_export(w: World, party: str, pseudonym: str) -> Any:
    return await w.client(party).subject_export(pseudonym, w.deployment.server_public_key)


@check("GET /v1/ledger/subjects/{pseudonym}/export")
async def _subject_exported(w: World, party: str, pseudonym: str, body: Any) -> None:
    _, verified = body  # the SDK verified every inclusion proof and the head's signature
    assert verified.entries


