"""The rules a correction keeps (DESIGN.md section 5): the service checks them against the packet it corrects.

A correction is a new packet that supersedes an earlier one, goes to the same recipients and
names the fields that were wrong. Only the service can see the earlier packet, so these are
service rules: listed here with their sentence and source, enforced in
:mod:`exchange.service.corrections`.
"""

from __future__ import annotations

from exchange.policy import sources as src
from exchange.policy.facts import RuleText

#: Keeping the record accurate, and putting it right where it was not.
_ACCURATE_RECORD = src.both(src.ACCURATE, src.RECORD, src.design("§5 Lifecycle (corrected)"))

SERVICE_RULES: tuple[RuleText, ...] = (
    RuleText(
        "correction.unknown_packet",
        "A correction names a packet its sender sent; nobody corrects another member's packet.",
        src.both(src.design("§5 Lifecycle (corrected)"), src.design("§7 Authorization")),
    ),
    RuleText(
        "correction.not_delivered",
        "Only a delivered packet is corrected: one recalled, refused, still awaiting approval or already"
        " superseded by another correction is not.",
        _ACCURATE_RECORD,
    ),
    RuleText(
        "correction.recipients_differ",
        "A correction goes to exactly the recipients of the packet it corrects, so everyone who received the"
        " wrong information receives the right one, and nobody else does.",
        src.both(_ACCURATE_RECORD, src.ONLY_THOSE_WHO_NEED_IT),
    ),
    RuleText(
        "correction.field_not_in_original",
        "A correction names only fields the earlier packet shared: a field it never held cannot have been wrong.",
        _ACCURATE_RECORD,
    ),
)
