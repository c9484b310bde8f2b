"""The fixed vocabularies of the manifest: each code with the plain-English words it stands for.

These are the law's and the guidance's own categories (the Article 6 bases, the grounds for
sharing without consent, the four points of informed consent...). The rules depend on them
by name, so they live in code. The vocabularies that change with a deployment or with new
legislation (purposes, fields, agency kinds, legal powers, roles) are data in ``schemas/``.
A code that is not in its vocabulary is a violation: nothing unknown passes by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

Vocabulary = Mapping[str, str]


def _vocab(entries: dict[str, str]) -> Vocabulary:
    return MappingProxyType(entries)


KINDS = _vocab(
    {
        "referral": "a referral asking the recipient to assess or act",
        "information": "information shared to inform the recipient's work",
        "request_response": "an answer to a request for information",
        "consultation": "a request for advice that does not identify the family",
        "notification": "a notification that needs action at once",
        "report": "a report, for example to a child protection conference",
    }
)

URGENCIES = _vocab(
    {
        "routine": "routine: within the purpose's normal deadlines",
        "urgent": "urgent: the same working day",
        "immediate": "immediate: the risk is imminent; notify at once",
    }
)

LABELS = _vocab(
    {
        "fact_observed": "a fact the author saw or heard directly",
        "fact_reported": "a fact someone else reported (say who, by role)",
        "opinion": "a professional opinion (say the author's role)",
    }
)

#: Labels that present a field as a fact (observed or reported), as opposed to an opinion.
FACT_LABELS = frozenset({"fact_observed", "fact_reported"})

#: What a field is by nature (``nature`` in ``schemas/fields.v1.json``; absent means fact_or_opinion).
FIELD_NATURES = _vocab(
    {
        "fact_or_opinion": "a fact observed or reported, or an opinion: labelled as what it is",
        "judgement": "a professional judgement by nature: always an opinion, with its author's role",
    }
)

CURRENCIES = _vocab(
    {
        "current": "current: true now",
        "historical": "historical: true at the as-of date, not necessarily now",
    }
)

ARTICLE6 = _vocab(
    {
        "public_task": "UK GDPR Art. 6(1)(e): a task in the public interest or in official authority",
        "legal_obligation": "UK GDPR Art. 6(1)(c): a legal obligation, such as a court order",
        "vital_interests": "UK GDPR Art. 6(1)(d): to protect someone's life",
        "recognised_legitimate_interest": (
            "UK GDPR Art. 6(1)(ea): a recognised legitimate interest, which includes safeguarding"
            " (Data (Use and Access) Act 2025)"
        ),
        "legitimate_interests": "UK GDPR Art. 6(1)(f): legitimate interests (not for a public authority's tasks)",
        "consent": "UK GDPR Art. 6(1)(a): the person's consent",
    }
)

#: Bases under which a public body acts on a power or duty in law, which must then be named.
ARTICLE6_NEEDING_POWER = frozenset({"public_task", "legal_obligation"})

ARTICLE9 = _vocab(
    {
        "safeguarding_children": (
            "UK GDPR Art. 9(2)(g) with DPA 2018 Sch. 1 para 18: safeguarding of children and of individuals at risk"
        ),
        "statutory_purposes": "UK GDPR Art. 9(2)(g) with DPA 2018 Sch. 1 para 6: statutory and government purposes",
        "preventing_crime": (
            "UK GDPR Art. 9(2)(g) with DPA 2018 Sch. 1 para 10: preventing or detecting unlawful acts"
        ),
        "health_social_care": "UK GDPR Art. 9(2)(h) with DPA 2018 Sch. 1 para 2: health or social care",
        "public_health": "UK GDPR Art. 9(2)(i) with DPA 2018 Sch. 1 para 3: public health",
        "vital_interests": "UK GDPR Art. 9(2)(c): to protect someone's life when they cannot consent",
        "explicit_consent": "UK GDPR Art. 9(2)(a): the person's explicit consent",
    }
)

CONSENT_STATUSES = _vocab(
    {
        "obtained": "consent was obtained",
        "refused": "consent was sought and refused",
        "not_sought": "consent was not sought",
        "not_required": "consent is not needed: nothing shared identifies anyone",
    }
)

#: Statuses that mean the packet is shared without consent: a reason and a manager's approval are needed.
WITHOUT_CONSENT_STATUSES = frozenset({"refused", "not_sought"})

CONSENT_PARTIES = _vocab(
    {
        "subject": "the child or young person themselves",
        "parent_carer": "a person with parental responsibility",
        "subject_and_parent_carer": "both the young person and a person with parental responsibility",
    }
)

AGE_BANDS = _vocab(
    {
        "unborn": "an unborn child",
        "under_13": "under 13",
        "age_13_to_15": "13 to 15",
        "age_16_to_17": "16 or 17",
        "adult": "18 or over",
    }
)

#: Age bands for which consent normally comes from a person with parental responsibility.
UNDER_16 = frozenset({"unborn", "under_13", "age_13_to_15"})

COMPETENCE = _vocab(
    {
        "competent": "assessed as competent to decide for themselves (Gillick/Fraser)",
        "not_competent": "assessed as not yet competent to decide for themselves",
        "not_assessed": "competence has not been assessed",
    }
)

CHILD_VIEWS = _vocab(
    {
        "agreed": "the child agreed to the sharing",
        "refused": "the child refused the sharing",
        "not_asked": "the child was not asked",
    }
)

INFORMED_POINTS = _vocab(
    {
        "what_will_happen": "what will happen to the information",
        "who_will_be_told_what": "who will be told what",
        "who_they_will_tell": "who they will then tell",
        "why_told": "why people are being told the information",
    }
)

ONWARD_SCOPES = _vocab(
    {
        "any": "the recipients may pass it on as their own duties require",
        "agency_kinds": "the recipients may pass it on only to the agency kinds listed",
        "none": "the recipients may not pass it on",
    }
)

WITHOUT_CONSENT_REASONS = _vocab(
    {
        "legal_obligation": "there is a legal obligation to share, such as a court order",
        "statutory_requirement": "a statute requires it, such as the notification of a notifiable disease",
        "significant_harm_risk": "there is actual or potential risk of significant harm to a child",
        "seeking_consent_increases_risk": (
            "seeking consent would itself place the child or another person at risk of significant harm,"
            " or compromise a child protection investigation"
        ),
        "building_picture_of_risk": (
            "information must be shared to build up a picture of whether a child is at risk of significant"
            " harm, and telling the family would increase that risk"
        ),
        "competent_child_refusal_at_risk": (
            "a Fraser/Gillick competent child refuses consent and the refusal places them at risk of significant harm"
        ),
        "serious_crime": "sharing is needed to prevent or detect a serious crime",
    }
)

#: Grounds of overriding public interest that rest on a risk of significant harm (Newcastle 3.1).
HARM_REASONS = frozenset({"significant_harm_risk", "seeking_consent_increases_risk", "competent_child_refusal_at_risk"})
#: Building a picture of risk is allowed while the risk is still only possible.
PICTURE_REASONS = frozenset({"building_picture_of_risk"})
#: Duties in law do not wait for the family to change their mind.
WAIT_EXEMPT_REASONS = frozenset({"legal_obligation", "statutory_requirement"})

TRANSPARENCY_STATUSES = _vocab(
    {
        "informed": "the person has been told what is shared, with whom and why",
        "not_informed": "the person has not been told (say why)",
        "not_applicable": "nothing shared identifies anyone, so there is no one to tell",
    }
)

TRANSPARENCY_REASONS = _vocab(
    {
        "would_increase_risk": "telling them would create or increase a risk of harm",
        "would_prejudice_investigation": "telling them could compromise a child protection or criminal investigation",
        "not_possible": "they cannot be reached or cannot understand",
        "will_inform_later": "they will be told later, by the date given",
    }
)

RISK_LEVELS = _vocab(
    {
        "not_yet_known": "not yet known",
        "no_identified_risk": "no identified risk",
        "wellbeing_concern": "a concern for wellbeing or additional needs",
        "possible_significant_harm": "possible significant harm, not yet established",
        "significant_harm": "significant harm, or a risk of it",
    }
)

#: Risk levels at which each harm-based ground applies.
HARM_LEVELS = frozenset({"significant_harm"})
PICTURE_LEVELS = frozenset({"possible_significant_harm", "significant_harm"})

EXPECTED_BENEFITS = _vocab(
    {
        "protects_from_harm": "the child will be safer",
        "enables_assessment": "it allows an assessment of the child's needs or risks",
        "enables_early_support": "it allows support to start early",
        "coordinates_services": "it coordinates the services working with the family",
        "informs_planning": "it informs a plan or conference decision",
        "prevents_or_detects_crime": "it helps prevent or detect a crime",
        "seeks_advice": "it gets advice on what to do",
    }
)

#: What a recipient did or will do about a packet: the action report closing the loop (DESIGN.md
#: section 5; guidance: "never assume another professional acted: find out what they will do").
ACTIONS = _vocab(
    {
        "no_further_action": "no further action",
        "advice_and_signposting": "advice and signposting to other services",
        "early_help_assessment": "an early help assessment",
        "child_in_need_assessment_s17": "a child in need assessment (Children Act 1989 s.17)",
        "strategy_discussion_s47_enquiry": "a strategy discussion and s.47 enquiry (Children Act 1989 s.47)",
        "referred_on": "referred on to another agency or service",
        "information_noted": "the information was noted on the recipient's records",
        "advice_given": "advice given in reply to an anonymous consultation",
        "other": "something else (the narrative says what)",
    }
)

#: An anonymous consultation identifies nobody, so nothing can be started about a family from it:
#: the adviser advises, signposts, suggests a referral, notes it, or does nothing more.
CONSULTATION_ACTIONS = frozenset(
    {"advice_given", "advice_and_signposting", "referred_on", "information_noted", "no_further_action", "other"}
)
#: Only a consultation is answered with advice; any other packet is answered with what was done.
CONSULTATION_ONLY_ACTIONS = frozenset({"advice_given"})
#: Actions whose words are the whole point: the narrative (sealed to the sender) is required.
ACTIONS_NEEDING_NARRATIVE = frozenset({"other", "advice_given"})

#: What a document or image field may be. Executable or macro-bearing formats are not accepted.
ATTACHMENT_MEDIA_TYPES = _vocab(
    {
        "application/pdf": "PDF document",
        "image/jpeg": "JPEG image",
        "image/png": "PNG image",
        "text/plain": "plain text",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "Word document (.docx)",
    }
)

#: Field value types that are carried as an attachment (bytes in the body, digest in the manifest).
ATTACHMENT_VALUE_TYPES = frozenset({"document", "image"})


def describe(vocabulary: Vocabulary, code: str | None) -> str:
    """The words for ``code``, or the code itself when it is unknown."""
    if code is None:
        return "nothing"
    return vocabulary.get(code, code)


def one_of(vocabulary: Iterable[str]) -> str:
    """``a, b or c``: the codes a practitioner may choose from."""
    codes = sorted(vocabulary)
    if len(codes) == 1:
        return codes[0]
    return ", ".join(codes[:-1]) + " or " + codes[-1]
