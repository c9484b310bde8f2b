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
