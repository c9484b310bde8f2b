"""The registry of every sharing rule, in the order a practitioner reads a packet.

Each rule is a small pure function with a stable id, the sentence it enforces and the
guidance it comes from (``exchange rules`` prints them all). The registry is a constant: a
rule is added by writing it in one of the ``rules_*`` modules and listing it there.

A few rules need what only the service can verify (a signature, the approver's role, the
directory's word on who the sender is and which agency they belong to); the service enforces
them and cites the ids in :data:`SERVICE_RULES` (as a violation's rule, or as the problem's
code), listed here so that every id a rejection can carry is explained in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from exchange.policy import (
    rules_consent,
    rules_corrections,
    rules_fields,
    rules_parties,
    rules_proportionality,
    rules_without_consent,
)
from exchange.policy import sources as src
from exchange.policy.facts import Facts, Finding, Rule, RuleText

RULES: tuple[Rule, ...] = (
    *rules_parties.RULES,
    *rules_consent.RULES,
    *rules_without_consent.RULES,
    *rules_proportionality.RULES,
    *rules_fields.RULES,
)

RULES_BY_ID: Mapping[str, Rule] = MappingProxyType({rule.id: rule for rule in RULES})


#: A rule the service enforces itself, because it needs a verified signature or the directory.
ServiceRule = RuleText

SERVICE_RULES: tuple[ServiceRule, ...] = (
    ServiceRule(
        "without_consent.approver_not_manager",
        "Only a manager or safeguarding lead of the sender's own agency can approve sharing without consent;"
        " an approval by anyone else is refused.",
        src.both(src.MANAGER_APPROVAL, src.design("§7 Authorization")),
    ),
    ServiceRule(
        "without_consent.self_approval",
        "Nobody approves their own sharing without consent: the senior approval must come from another manager"
        " or safeguarding lead of the sender's agency, whether attached at submission or given in the queue.",
        src.both(src.MANAGER_APPROVAL, src.design("§4 Without consent")),
    ),
    ServiceRule(
        "recipient.role_cannot_receive",
        "Packets go to practitioners, managers and safeguarding leads; agency admins and auditors manage the"
        " directory and read the record, and never receive content.",
        src.both(src.ONLY_THOSE_WHO_NEED_IT, src.design("§2 Who uses it")),
    ),
    ServiceRule(
        "sender.not_signer",
        "A packet is sent in its sender's own name: the manifest's sender is the member who signs the request,"
        " and a packet naming anyone else is refused (403).",
        src.both(src.RECORD, src.design("§3: 'The sender signs the canonical manifest'")),
    ),
    ServiceRule(
        "sender.not_member_of_agency",
        "A sender shares for the agency they belong to: a manifest naming any other agency as the sender's is"
        " refused (403), so the record never shows an agency sharing what it did not.",
        src.both(src.RECORD, src.design("§7 Authorization: 'by role and relationship'")),
    ),
    ServiceRule(
        "without_consent.approval_refused",
        "A packet whose attached decision is a manager's refusal is not sent.",
        src.MANAGER_APPROVAL,
    ),
    *rules_corrections.SERVICE_RULES,
)

if len({*RULES_BY_ID, *(rule.id for rule in SERVICE_RULES)}) != len(RULES) + len(SERVICE_RULES):
    raise RuntimeError("two sharing rules share an id")  # rejections would be ambiguous

__all__ = ["RULES", "RULES_BY_ID", "SERVICE_RULES", "Facts", "Finding", "Rule", "RuleText", "ServiceRule"]
