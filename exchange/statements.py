"""The exact statements members sign besides manifests: acknowledgements, approvals, the loop, requests.

Each is RFC 8785 canonical JSON with a ``type`` naming what it is, so a signature made for one
statement can never be presented as another (an acknowledgement is not an approval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from exchange.crypto import canonical_json, digest_text

ACKNOWLEDGEMENT = "safeguarding-exchange/acknowledgement/v1"
APPROVAL = "safeguarding-exchange/approval/v1"


def acknowledgement_statement(packet_id: str, manifest_digest: str, recipient: str) -> bytes:
    """What a recipient signs to acknowledge receipt of one packet."""
    return canonical_json(
        {
            "type": ACKNOWLEDGEMENT,
            "packet_id": packet_id,
            "manifest_digest": manifest_digest,
            "member": recipient,
        }
    )


def approval_statement(packet_id: str, manifest_digest: str, approver: str, decision: str) -> bytes:
    """What a manager signs to approve (or refuse) sharing one manifest without consent.

    The manifest digest is computed over the manifest alone: the approval is not part of it.
    """
    return canonical_json(
        {
            "type": APPROVAL,
            "packet_id": packet_id,
            "manifest_digest": manifest_digest,
            "approver": approver,
            "decision": decision,
        }
    )


LOOP = "safeguarding-exchange/loop/v1"


def loop_statement(
    step: str,
    packet_id: str,
    manifest_digest: str,
    recipient: str,
    author: str,
    *,
    action: str | None = None,
    note_digest: str | None = None,
    answers: str | None = None,
) -> bytes:
    """What a member signs in a recipient's feedback loop.

    ``step`` is ``report`` (the recipient says what they did or will do, ``action`` from the
    vocabulary), ``confirm`` or ``query`` (the sender's answer to a report). ``note_digest`` is
    the digest of the sealed narrative, binding it to the signature; ``answers`` is the id of the
    statement this one answers (a report answering a query, a confirmation of a report).
    """
    return canonical_json(
        {
            "type": LOOP,
            "step": step,
            "packet_id": packet_id,
            "manifest_digest": manifest_digest,
            "recipient": recipient,
            "author": author,
            "action": action,
            "note_digest": note_digest,
            "answers": answers,
        }
    )


INFORMATION_REQUEST = "safeguarding-exchange/information-request/v1"
REQUEST_DECLINE = "safeguarding-exchange/request-decline/v1"
SHARE_DECISION = "safeguarding-exchange/decision-not-to-share/v1"


def request_statement(request: Mapping[str, Any]) -> bytes:
    """What a requester signs: the whole request document (no personal data; the details' digests in it)."""
    return canonical_json({"type": INFORMATION_REQUEST, "request": dict(request)})


def request_digest(request: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the signed request statement: what a decline names, so it declines exactly this request."""
    return digest_text(request_statement(request))


def decline_statement(
    request_id: str,
    request_digest: str,
    decliner: str,
    reason_codes: Sequence[str],
    *,
    note_digest: str,
    note_key: str,
) -> bytes:
    """What a holder signs to decline a request: the reasons, and the digest of the explanation sealed to the
    requester's key ``note_key`` (so the explanation cannot be swapped for another)."""
    return canonical_json(
        {
            "type": REQUEST_DECLINE,
            "request_id": request_id,
            "request_digest": request_digest,
            "decliner": decliner,
            "reason_codes": list(reason_codes),
            "note_digest": note_digest,
            "note_key": note_key,
        }
    )


def share_decision_statement(decision: Mapping[str, Any]) -> bytes:
    """What a practitioner signs to record a decision not to share (the document names its sealed reasons' digest)."""
    return canonical_json({"type": SHARE_DECISION, "decision": dict(decision)})


def request_note_context(request_id: str) -> str:
    """What a request's details sealed to a holder are bound to (the HPKE ``info`` of :func:`crypto.seal_note`)."""
    return f"request:{request_id}"


def decline_note_context(request_id: str) -> str:
    """What a decline's explanation sealed to the requester is bound to."""
    return f"decline:{request_id}"


def decision_note_context(decision_id: str) -> str:
    """What a decision's reasons sealed to their author are bound to."""
    return f"decision:{decision_id}"


ENROLMENT = "safeguarding-exchange/enrolment/v1"
NEW_KEY = "safeguarding-exchange/new-key/v1"


def enrolment_statement(signing_key_id: str, encryption_key_id: str) -> bytes:
    """What a new member signs with their new signing key: "these two keys are mine".

    The member's own proof of possession, made on their own machine (``exchange keys new``) before an
    admin registers them: an admin can bind a person to keys only with that person's signature over
    them. Key ids are fingerprints, so the statement names the exact public keys.
    """
    return canonical_json({"type": ENROLMENT, "signing_key": signing_key_id, "encryption_key": encryption_key_id})


def new_key_statement(member: str, key_id: str, use: str) -> bytes:
    """What a member signs with a new signing key when adding it (proof of possession of that key)."""
    return canonical_json({"type": NEW_KEY, "member": member, "key": key_id, "use": use})
