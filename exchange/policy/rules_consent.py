"""Rules about the lawful basis and consent."""

from __future__ import annotations

from collections.abc import Iterator

from exchange.policy import sources as src
from exchange.policy import vocabulary as v
from exchange.policy.facts import Facts, Finding, Rule

# --------------------------------------------------------------------------- lawful basis


def _article6_unknown(f: Facts) -> Iterator[Finding]:
    if f.record.lawful_basis.article6 not in v.ARTICLE6:
        yield Finding(
            "/lawful_basis/article6",
            f"Give the UK GDPR Article 6 basis for sharing; it must be {v.one_of(v.ARTICLE6)}.",
        )


def _special_category_condition_missing(f: Facts) -> Iterator[Finding]:
    if f.record.lawful_basis.article9 is not None:
        return
    special = f.entries_where(lambda d: d.special_category)
    if special:
        names = ", ".join(sorted({entry.name for entry in special}))
        yield Finding(
            "/lawful_basis/article9",
            f"{names} {'is' if len(special) == 1 else 'are'} special-category data (health, ethnicity...):"
            " give the Article 9 condition, usually safeguarding_children (DPA 2018 Schedule 1 paragraph 18).",
        )


def _article9_unknown(f: Facts) -> Iterator[Finding]:
    article9 = f.record.lawful_basis.article9
    if article9 is not None and article9 not in v.ARTICLE9:
        yield Finding("/lawful_basis/article9", f"The Article 9 condition must be {v.one_of(v.ARTICLE9)}.")


def _legal_power_missing(f: Facts) -> Iterator[Finding]:
    basis = f.record.lawful_basis
    if basis.article6 in v.ARTICLE6_NEEDING_POWER and not basis.legal_power:
        yield Finding(
            "/lawful_basis/legal_power",
            f"With the basis {basis.article6}, name the legal power or duty you rely on"
            " (for example children_act_2004_s11 or children_act_1989_s47).",
        )


def _legal_power_unknown(f: Facts) -> Iterator[Finding]:
    for index, power in enumerate(f.record.lawful_basis.legal_power):
        if power not in f.catalogue.legal_powers:
            yield Finding(
                f"/lawful_basis/legal_power/{index}",
                "This is not a legal power the exchange knows; `exchange template` lists the usual ones.",
            )


def _consent_basis_without_consent(f: Facts) -> Iterator[Finding]:
    basis = f.record.lawful_basis
    if f.record.consent.status == "obtained":
        return
    if basis.article6 == "consent":
        yield Finding(
            "/lawful_basis/article6", "Consent is given as the Article 6 basis, but consent was not obtained."
        )
    if basis.article9 == "explicit_consent":
        yield Finding(
            "/lawful_basis/article9",
            "Explicit consent is given as the Article 9 condition, but consent was not obtained.",
        )


# --------------------------------------------------------------------------- consent


def _status_unknown(f: Facts) -> Iterator[Finding]:
    if f.record.consent.status not in v.CONSENT_STATUSES:
        yield Finding("/consent/status", f"Record the consent status: {v.one_of(v.CONSENT_STATUSES)}.")


def _not_informed(f: Facts) -> Iterator[Finding]:
    consent = f.record.consent
    if consent.status != "obtained":
        return
    for point, words in v.INFORMED_POINTS.items():
        if consent.informed.get(point) is not True:
            yield Finding(
                f"/consent/informed/{point}",
                f"Consent is informed only if the person understood {words}; record that they did"
                " (or that consent was not obtained).",
            )


def _given_by_missing(f: Facts) -> Iterator[Finding]:
    consent = f.record.consent
    if consent.status == "obtained" and consent.given_by not in v.CONSENT_PARTIES:
        yield Finding("/consent/given_by", f"Say who gave consent: {v.one_of(v.CONSENT_PARTIES)}.")


def _refused_by_missing(f: Facts) -> Iterator[Finding]:
    consent = f.record.consent
    if consent.status == "refused" and consent.refused_by not in v.CONSENT_PARTIES:
        yield Finding("/consent/refused_by", f"Say who refused consent: {v.one_of(v.CONSENT_PARTIES)}.")


def _age_band_missing(f: Facts) -> Iterator[Finding]:
    consent = f.record.consent
    if consent.status in ("obtained", "refused") and consent.subject_age_band not in v.AGE_BANDS:
        yield Finding(
            "/consent/subject_age_band",
            f"Give the age band of the person the information is about ({v.one_of(v.AGE_BANDS)}):"
            " it decides who can consent.",
        )


def _under_16_needs_parent(f: Facts) -> Iterator[Finding]:
    consent = f.record.consent
    if consent.status != "obtained" or consent.given_by != "subject" or consent.subject_age_band not in v.UNDER_16:
        return
    if consent.subject_age_band == "unborn":
        yield Finding("/consent/given_by", "An unborn child cannot consent: consent comes from the expectant parent.")
    elif consent.child_competence != "competent":
        yield Finding(
            "/consent/given_by",
            "A child under 16 consents for themselves only when assessed as competent (Gillick/Fraser);"
            " otherwise consent comes from a person with parental responsibility. Record the competence"
            " assessment, or the parent's consent.",
        )


def _over_16_consents_for_self(f: Facts) -> Iterator[Finding]:
    consent = f.record.consent
    if (
        consent.status == "obtained"
        and consent.given_by == "parent_carer"
        and consent.subject_age_band
        not in (
            *v.UNDER_16,
            None,
        )
    ):
        yield Finding(
            "/consent/given_by",
            "A young person of 16 or over consents for themselves; a parent's consent alone is not enough.",
        )


def _child_view_unknown(f: Facts) -> Iterator[Finding]:
    view = f.record.consent.child_view
    if view is not None and view not in v.CHILD_VIEWS:
        yield Finding("/consent/child_view", f"The child's own view must be {v.one_of(v.CHILD_VIEWS)}.")


def _competent_child_refusal_overrides_parent(f: Facts) -> Iterator[Finding]:
    # Newcastle, grounds for sharing without consent: a Fraser/Gillick competent child "refusing consent
    # (contrary to the wishes of their parent)". The parent's agreement is not consent; the refusal stands.
    consent = f.record.consent
    if consent.status == "obtained" and consent.child_competence == "competent" and consent.child_view == "refused":
        yield Finding(
            "/consent/status",
            "The child is recorded as competent (Gillick/Fraser) and refused: a parent's consent does not"
            " override a competent child's refusal, so sharing now would be sharing without consent. Respect the"
            " refusal, or record consent as refused by the child (refused_by: subject), give the reason"
            " (competent_child_refusal_at_risk when the refusal places them at risk of significant harm) and"
            " get a manager's approval.",
        )


def _onward_sharing_invalid(f: Facts) -> Iterator[Finding]:
    onward = f.record.consent.onward_sharing
    if onward is None:
        return
    if onward.scope not in v.ONWARD_SCOPES:
        yield Finding("/consent/onward_sharing/scope", f"The onward-sharing limit must be {v.one_of(v.ONWARD_SCOPES)}.")
    elif onward.scope == "agency_kinds" and not onward.agency_kinds:
        yield Finding("/consent/onward_sharing/agency_kinds", "List the kinds of agency the recipients may tell.")
    elif onward.scope != "agency_kinds" and onward.agency_kinds:
        yield Finding(
            "/consent/onward_sharing/agency_kinds", "Agency kinds are listed only when the limit is agency_kinds."
        )
    for index, kind in enumerate(onward.agency_kinds):
        if kind not in f.catalogue.agency_kinds:
            yield Finding(
                f"/consent/onward_sharing/agency_kinds/{index}", "This is not an agency kind the exchange knows."
            )


def _onward_source_unknown(f: Facts) -> Iterator[Finding]:
    for index, packet_id in enumerate(f.record.derived_from):
        if packet_id in f.context.onward_limits:
            continue
        if f.context.offline:
            yield Finding(
                f"/derived_from/{index}",
                "What the earlier packet's consent allows you to pass on is checked when you send.",
                advisory=True,
            )
        else:
            yield Finding(f"/derived_from/{index}", "The exchange does not know the packet this one passes on.")


def _onward_sharing_exceeded(f: Facts) -> Iterator[Finding]:
    if f.record.consent.status != "obtained":
        return  # sharing on another ground, with a manager's approval, is judged by the without_consent rules
    for packet_id in f.record.derived_from:
        limit = f.context.onward_limits.get(packet_id)
        if limit is None:
            continue
        for recipient in f.record.recipients:
            kind = f.context.recipient_agency_kinds.get(recipient.key)
            if kind is not None and not limit.allows(kind):
                allowed = ", ".join(sorted(limit.agency_kinds)) if limit.scope == "agency_kinds" else "no one"
                yield Finding(
                    recipient.path,
                    f"The consent behind {packet_id} lets its recipients tell only: {allowed}. This packet relies"
                    f" on consent, so it cannot go to {f.catalogue.agency_kinds.get(kind, kind)}. Share within"
                    " the consent, or record a reason to share without consent and get a manager's approval.",
                )


def _not_required_but_identifying(f: Facts) -> Iterator[Finding]:
    if f.record.consent.status != "not_required":
        return
    for entry in f.identifying_entries:
        yield Finding(
            entry.path,
            "Consent is recorded as not required, but this field can identify someone. Consent is not required"
            " only when nothing shared identifies anyone: seek consent, or record why it was not sought.",
        )
    if f.record.subject_path is not None:
        yield Finding(
            f.record.subject_path,
            "Consent is recorded as not required, but the packet refers to a child; seek consent, or record why not.",
        )


RULES: tuple[Rule, ...] = (
    Rule(
        "basis.article6_unknown",
        "Every packet gives a known UK GDPR Article 6 basis, such as public_task or recognised_legitimate_interest "
        "(6(1)(ea)).",
        src.DPA_FRAMEWORK,
        _article6_unknown,
    ),
    Rule(
        "basis.special_category_condition_missing",
        "Special-category data (health, ethnicity, sexual life...) needs an Article 9 condition, e.g. DPA 2018 Sch. "
        "1 para 18.",
        src.DPA_FRAMEWORK,
        _special_category_condition_missing,
    ),
    Rule(
        "basis.article9_unknown",
        "An Article 9 condition, when given, is a known one.",
        src.DPA_FRAMEWORK,
        _article9_unknown,
    ),
    Rule(
        "basis.legal_power_missing",
        "A public task or legal obligation names the legal power or duty relied on (e.g. Children Act 1989 s.47).",
        src.both(src.DPA_FRAMEWORK, src.partnership("'we have a power or duty to share as part of our public task'")),
        _legal_power_missing,
    ),
    Rule(
        "basis.legal_power_unknown",
        "Every legal power named is one the catalogue knows.",
        src.DPA_FRAMEWORK,
        _legal_power_unknown,
    ),
    Rule(
        "basis.consent_not_obtained",
        "Consent (Art. 6(1)(a)) or explicit consent (Art. 9(2)(a)) is a basis only when consent was obtained.",
        src.both(src.DPA_FRAMEWORK, src.RESPECT_WISHES),
        _consent_basis_without_consent,
    ),
    Rule(
        "consent.status_unknown",
        "Every packet records consent as obtained, refused, not sought or not required.",
        src.both(src.RESPECT_WISHES, src.RECORD),
        _status_unknown,
    ),
    Rule(
        "consent.not_informed",
        "Consent counts only if informed: the person understood what will happen, who will be told what, who they "
        "will tell, and why.",
        src.INFORMED_CONSENT,
        _not_informed,
    ),
    Rule(
        "consent.given_by_missing",
        "Obtained consent records who gave it.",
        src.both(src.UNDER_16_CONSENT, src.RECORD),
        _given_by_missing,
    ),
    Rule(
        "consent.refused_by_missing",
        "A refusal records who refused.",
        src.both(src.RESPECT_WISHES, src.RECORD),
        _refused_by_missing,
    ),
    Rule(
        "consent.age_band_missing",
        "A consent decision records the age band of the person it is about, since that decides who may consent.",
        src.UNDER_16_CONSENT,
        _age_band_missing,
    ),
    Rule(
        "consent.under_16_needs_parent",
        "A child under 16 consents alone only when recorded as competent (Gillick/Fraser); otherwise a person with "
        "parental responsibility consents.",
        src.both(
            src.UNDER_16_CONSENT,
            src.newcastle("'Children and Young People may be able to give consent ... if they have the capacity'"),
        ),
        _under_16_needs_parent,
    ),
    Rule(
        "consent.over_16_consents_for_self",
        "A young person of 16 or over consents for themselves, not through a parent alone.",
        src.UNDER_16_CONSENT,
        _over_16_consents_for_self,
    ),
    Rule(
        "consent.child_view_unknown",
        "The child's own view, when recorded, is agreed, refused or not asked.",
        src.both(src.UNDER_16_CONSENT, src.RECORD),
        _child_view_unknown,
    ),
    Rule(
        "consent.competent_child_refusal_overrides_parent",
        "A parent's consent does not override the refusal of a child recorded as competent (Gillick/Fraser):"
        " sharing against that refusal is sharing without consent, with a recognised ground and a manager's"
        " approval.",
        src.both(
            src.newcastle(
                "Sharing Information without Consent: 'a child is deemed to be Fraser/Gillick competent and is"
                " refusing consent (contrary to the wishes of their parent)'"
            ),
            src.RESPECT_WISHES,
        ),
        _competent_child_refusal_overrides_parent,
    ),
    Rule(
        "consent.onward_sharing_invalid",
        "A limit on onward sharing is any, none, or a list of known agency kinds.",
        src.both(src.INFORMED_CONSENT, src.design("§4 Consent")),
        _onward_sharing_invalid,
    ),
    Rule(
        "consent.onward_source_unknown",
        "A packet that passes on an earlier packet names one the exchange knows (checked when sending, not in a "
        "local check).",
        src.design("§4 Consent: 'a recipient's onward share that relies on consent must stay within it'"),
        _onward_source_unknown,
    ),
    Rule(
        "consent.onward_sharing_exceeded",
        "Passing information on in reliance on consent stays within the onward-sharing limit that consent set.",
        src.both(
            src.INFORMED_CONSENT,
            src.design("§4 Consent: 'a recipient's onward share that relies on consent must stay within it'"),
        ),
        _onward_sharing_exceeded,
    ),
    Rule(
        "consent.not_required_but_identifying",
        "Consent is 'not required' only when nothing shared identifies anyone.",
        src.both(
            src.SEEK_ADVICE_ANONYMOUSLY, src.partnership("'Does information enable an individual to be identified?'")
        ),
        _not_required_but_identifying,
    ),
)
