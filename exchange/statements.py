"""The exact statements members sign besides manifests: acknowledgements and approvals.

Each is RFC 8785 canonical JSON with a ``type`` naming what it is, so a signature made for one
statement can never be presented as another (an acknowledgement is not an approval).
"""

from __future__ import annotations

from exchange.crypto import canonical_json

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
