"""The sharing rules: pure functions over manifests, with the purpose catalogue as data.

Load the catalogue once (:func:`load_catalogue`), then judge each manifest with
:func:`evaluate` and a :class:`SharingContext`; the :class:`Decision` lists every broken rule
and says whether the packet is delivered, held for a manager's approval, or delivered first
with the approval owed (imminent harm). Nothing here reads a clock, a file or a database
after loading.
"""

from exchange.policy.catalogue import (
    DEFAULT_SCHEMAS_DIR,
    Catalogue,
    CatalogueInvalid,
    FieldDefinition,
    Purpose,
    Suggested,
    UrgencyDeadlines,
    load_catalogue,
)
from exchange.policy.context import OnwardLimit, SharingContext, Stage
from exchange.policy.deadlines import Span, WorkingCalendar
from exchange.policy.decision import Decision, Outcome, decide, evaluate
from exchange.policy.packet_file import (
    PacketParts,
    check_packet_file,
    clean_packet_file,
    load_packet_file,
    manifest_parts_from_packet_file,
)
from exchange.policy.rules import RULES, RULES_BY_ID, SERVICE_RULES, Rule, RuleText, ServiceRule
from exchange.policy.schema import validate_manifest_schema

__all__ = [
    "DEFAULT_SCHEMAS_DIR",
    "RULES",
    "RULES_BY_ID",
    "SERVICE_RULES",
    "Catalogue",
    "CatalogueInvalid",
    "Decision",
    "FieldDefinition",
    "OnwardLimit",
    "Outcome",
    "PacketParts",
    "Purpose",
    "Rule",
    "RuleText",
    "ServiceRule",
    "SharingContext",
    "Span",
    "Stage",
    "Suggested",
    "UrgencyDeadlines",
    "WorkingCalendar",
    "check_packet_file",
    "clean_packet_file",
    "decide",
    "evaluate",
    "load_catalogue",
    "load_packet_file",
    "manifest_parts_from_packet_file",
    "validate_manifest_schema",
]
