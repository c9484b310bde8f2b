"""Where each rule comes from: the guidance in ``seeds/`` (and, for mechanics, DESIGN.md).

Every rule cites one of these, so a practitioner reading a rejection can find the sentence
of the guidance it enforces.
"""

from __future__ import annotations

PRACTICE_TIPS = "seeds/000_5372357a1bb34269.txt"
PARTNERSHIP_ADVICE = "seeds/001_cca31a9f24ecfaa1.txt"
KEY_POINTS = "seeds/002_f18e6f46c04221e2.txt"
HARINGEY = "seeds/003_5fb70b731153d186.txt"
NEWCASTLE = "seeds/004_b06cd56e4ec51981.txt"
DESIGN = "DESIGN.md"


def golden_rule(number: int, title: str) -> str:
    """One of the seven golden rules for information sharing (HM Government, as quoted locally)."""
    return f"Seven golden rules, rule {number} ({title}) — {NEWCASTLE}, {HARINGEY}"


def practice_tip(number: int, title: str) -> str:
    """One of South Australia's 10 top practice tips."""
    return f"SA information sharing guidelines, practice tip {number} ({title}) — {PRACTICE_TIPS}"


def newcastle(section: str) -> str:
    return f"Newcastle guidance, {section} — {NEWCASTLE}"


def key_points(section: str) -> str:
    return f"Council key points, {section} — {KEY_POINTS}"


def partnership(section: str) -> str:
    return f"Partnership advice, {section} — {PARTNERSHIP_ADVICE}"


def design(section: str) -> str:
    return f"{DESIGN} {section}"


def both(*sources: str) -> str:
    return "; ".join(sources)


# The citations most rules share.
LEGITIMATE_PURPOSE = both(
    partnership("'Is there a clear legitimate purpose?'"),
    practice_tip(9, "a legitimate purpose and a justified reason"),
)
NECESSARY = golden_rule(6, "necessary, proportionate, relevant, accurate, timely and secure")
ONLY_THOSE_WHO_NEED_IT = both(NECESSARY, practice_tip(7, "shared only with those people who need to have it"))
ACCURATE = both(
    partnership("'distinguished between fact and opinion and whether it is current or historical'"),
    NECESSARY,
)
RECORD = both(golden_rule(7, "keep a record"), practice_tip(8, "record what, with whom, for what purpose"))
DPA_FRAMEWORK = both(
    golden_rule(1, "the Data Protection Act is a framework, not a barrier"),
    partnership("'Is there a lawful reason to share without consent?'"),
    design("§4 Lawful basis"),
)
INFORMED_CONSENT = both(key_points("Understanding consent"), newcastle("Understanding consent"))
UNDER_16_CONSENT = both(newcastle("Consent"), design("§4 Consent"))
RESPECT_WISHES = both(
    golden_rule(4, "share with consent where appropriate"),
    practice_tip(5, "respect the wishes of those who do not consent"),
)
WITHOUT_CONSENT_GROUNDS = newcastle("Sharing Information without Consent")
MANAGER_APPROVAL = both(
    practice_tip(4, "seek permission from the senior person"), practice_tip(6, "with the approval of a manager")
)
PROPORTIONALITY = both(key_points("The importance of proportionality"), newcastle("The importance of proportionality"))
OPEN_AND_HONEST = both(
    golden_rule(2, "be open and honest"),
    partnership("'be transparent with the individual ... as long as doing so does not create or increase the risk'"),
)
SEEK_ADVICE_ANONYMOUSLY = both(
    golden_rule(3, "seek advice without disclosing the identity of the person where possible"),
    key_points("'a general discussion with children's services ... where you do not necessarily share the name'"),
)
IMMINENT_HARM = practice_tip(10, "notify as soon as the prospect of imminent harm becomes apparent")
REQUESTS = both(
    practice_tip(9, "give professional consideration to information sharing requests"), design("§5 Requests")
)
