"""Judging a packet: every rule over the manifest, then what happens next and by when.

:func:`evaluate` is pure: the catalogue is loaded beforehand, the clock is ``context.now``,
and the directory's facts arrive in the :class:`SharingContext`. It lists **every** broken
rule, in the registry's order, so a practitioner can fix everything at once.

Approval for sharing without consent is a separate signature the service verifies; the
policy is told only whether a valid one is attached, and answers with one of four outcomes:

* ``rejected``: at least one rule is broken; nothing is stored or delivered.
* ``awaiting_approval``: shared without consent, no approval yet: hold it for a manager.
* ``deliver_approval_owed``: the same, but for imminent harm: deliver now, approval due by
  ``approval_due_by``.
* ``deliver``: deliver now.

The service calls :func:`evaluate` at submission (``stage="submission"``) and again just
before delivering (``stage="delivery"``, with the approval it then holds), where a missing
approval is the violation ``without_consent.approval_missing`` — so a packet can never be
delivered without approval, except for imminent harm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from exchange.domain import iso
from exchange.errors import PolicyViolation, Violation
from exchange.policy.catalogue import Catalogue
from exchange.policy.context import SharingContext
from exchange.policy.facts import Facts
from exchange.policy.model import SharingRecord, record_from_manifest
from exchange.policy.rules import RULES
from exchange.policy.schema import validate_manifest_schema

Outcome = Literal["rejected", "awaiting_approval", "deliver_approval_owed", "deliver"]


@dataclass(frozen=True)
class Decision:
    """The verdict on one packet, and the deadlines that follow from its purpose and urgency."""

    #: Every broken rule, in the registry's order (empty: the packet may go ahead).
    violations: tuple[Violation, ...]
    #: Plain-English notes: what a local check could not judge, and what will happen next.
    notes: tuple[str, ...]
    #: Shared without consent and no verified approval attached.
    needs_approval: bool
    #: Imminent harm: deliver at once, approval owed afterwards.
    deliver_before_approval: bool
    approval_due_by: datetime | None
    ack_due_by: datetime | None
    action_due_by: datetime | None

    @property
    def accepted(self) -> bool:
        """No rule is broken (the packet may still wait for approval: see :attr:`outcome`)."""
        return not self.violations

    @property
    def outcome(self) -> Outcome:
        if self.violations:
            return "rejected"
        if self.needs_approval:
            return "deliver_approval_owed" if self.deliver_before_approval else "awaiting_approval"
        return "deliver"

    def raise_if_rejected(self) -> None:
        """Raise :class:`PolicyViolation` (422, every violation listed) if any rule is broken."""
        if self.violations:
            raise PolicyViolation(self.violations)

    def as_json(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return iso(moment) if moment is not None else None

        return {
            "outcome": self.outcome,
            "accepted": self.accepted,
            "violations": [violation.as_json() for violation in self.violations],
            "notes": list(self.notes),
            "needs_approval": self.needs_approval,
            "deliver_before_approval": self.deliver_before_approval,
            "approval_due_by": when(self.approval_due_by),
            "ack_due_by": when(self.ack_due_by),
            "action_due_by": when(self.action_due_by),
        }


def evaluate(manifest: Mapping[str, Any], context: SharingContext, catalogue: Catalogue) -> Decision:
    """Judge ``manifest`` against every sharing rule.

    Raises :class:`~exchange.errors.SchemaViolation` (every error listed) when the manifest is
    not in the ``manifest.v1.json`` format; otherwise returns a :class:`Decision`, never raising
    for a broken rule (call :meth:`Decision.raise_if_rejected` for that).
    """
    validate_manifest_schema(manifest, catalogue)
    return decide(record_from_manifest(manifest), context, catalogue)


def decide(record: SharingRecord, context: SharingContext, catalogue: Catalogue) -> Decision:
    """Judge an already-read :class:`SharingRecord` (a manifest's or a packet file's)."""
    facts = Facts(record=record, purpose=catalogue.purpose(record.purpose), catalogue=catalogue, context=context)
    violations: list[Violation] = []
    notes: list[str] = []
    for rule in RULES:
        for finding in rule.check(facts):
            if finding.advisory and context.offline:
                notes.append(finding.message)
            else:
                violations.append(
                    Violation(rule=rule.id, path=finding.path, message=finding.message, source=rule.source)
                )
    needs_approval = record.shares_without_consent and not context.approval_attached
    deliver_first = needs_approval and facts.imminent_harm
    spans = facts.purpose.deadlines_for(record.urgency) if facts.purpose and record.urgency else None
    calendar = catalogue.calendar
    approval_due = spans.approval.due_from(context.now, calendar) if spans is not None and needs_approval else None
    if context.offline and not violations and needs_approval:
        when = f" by {iso(approval_due)}" if approval_due is not None else ""
        notes.append(
            "Imminent harm: the packet will be delivered at once, and a manager or safeguarding lead of your"
            f" agency must approve it{when}."
            if deliver_first
            else "This packet shares without consent: once sent, it waits for a manager or safeguarding lead"
            f" of your agency to approve it{when} before it is delivered."
        )
    return Decision(
        violations=tuple(violations),
        notes=tuple(notes),
        needs_approval=needs_approval,
        deliver_before_approval=deliver_first,
        approval_due_by=approval_due,
        ack_due_by=spans.ack.due_from(context.now, calendar) if spans is not None else None,
        action_due_by=spans.action.due_from(context.now, calendar) if spans is not None else None,
    )
