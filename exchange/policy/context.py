"""What the rules need to know besides the manifest: who the parties are, and when.

The service builds a :class:`SharingContext` from its directory and store (agency kinds,
whether a verified manager's approval is attached, the limits of earlier packets); the
rules never look anything up themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

#: ``check``: a practitioner's local check: facts the exchange would look up are skipped with a note.
#: ``submission``: the server receives a packet; sharing without consent may wait for approval.
#: ``delivery``: the server is about to deliver; a missing approval is now a violation
#: (except for imminent harm, delivered first with the approval owed).
Stage = Literal["check", "submission", "delivery"]


@dataclass(frozen=True)
class OnwardLimit:
    """What the consent behind an earlier packet lets its recipients pass on."""

    #: ``any``, ``agency_kinds`` (only to ``agency_kinds``) or ``none``.
    scope: str
    agency_kinds: frozenset[str] = frozenset()

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, Any]) -> OnwardLimit:
        """The limit an earlier (already accepted) manifest's consent set; ``any`` when it set none."""
        consent = manifest.get("consent")
        onward = consent.get("onward_sharing") if isinstance(consent, Mapping) else None
        if not isinstance(onward, Mapping) or not isinstance(onward.get("scope"), str):
            return cls(scope="any")
        kinds = onward.get("agency_kinds")
        return cls(scope=onward["scope"], agency_kinds=frozenset(kinds) if isinstance(kinds, list) else frozenset())

    def allows(self, agency_kind: str) -> bool:
        if self.scope == "any":
            return True
        if self.scope == "agency_kinds":
            return agency_kind in self.agency_kinds
        return False


@dataclass(frozen=True)
class SharingContext:
    """The facts about a sharing decision that are not in the manifest."""

    #: The decision time (timezone-aware). Deadlines are counted from it.
    now: datetime
    #: The sender's agency kind; None only in a local check where it was not given.
    sender_agency_kind: str | None
    #: Recipient member id (or, in a local check, the packet file's ``to`` entry) -> agency kind.
    recipient_agency_kinds: Mapping[str, str] = field(default_factory=dict)
    #: True when the service has verified a manager's or safeguarding lead's approval, from the
    #: sender's agency, signed over this manifest's digest.
    approval_attached: bool = False
    stage: Stage = "submission"
    #: The server's configured cap on recipients per packet.
    recipient_cap: int = 25
    #: For each packet in the manifest's ``derived_from``: the onward-sharing limit of its consent.
    onward_limits: Mapping[str, OnwardLimit] = field(default_factory=dict)
    #: The fields the request in ``in_reply_to`` asked for; None when not looked up.
    requested_fields: frozenset[str] | None = None
    #: The directory's list of purposes the sender's agency may send; None when it sets no list.
    sender_purposes: frozenset[str] | None = None
    #: Per recipient (same keys as ``recipient_agency_kinds``): the purposes their agency may
    #: receive; a recipient missing here, or None, means the directory sets no list for them.
    recipient_purposes: Mapping[str, frozenset[str]] | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("SharingContext.now must be timezone-aware")
        if self.recipient_cap < 1:
            raise ValueError("SharingContext.recipient_cap must be at least 1")

    @property
    def offline(self) -> bool:
        """A local check: what only the exchange knows is noted, not judged."""
        return self.stage == "check"
