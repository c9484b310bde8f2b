"""``exchange report / query / confirm / loop / reply / actions`` run as subprocesses against a real server."""

from __future__ import annotations

import json

from exchange.examples import referral
from tests.conftest import Deployment
from tests.test_cli import cli, cli_json
from tests.test_loop import consultation


def _as(deployment: Deployment, label: str) -> list[str]:
    return ["--key", str(deployment.key_dir / f"{label}.json"), "--server", deployment.url]


def _id(deployment: Deployment, label: str) -> str:
    return deployment.credentials(label).member_id or ""


async def test_actions_lists_the_vocabulary_in_words() -> None:
    """``exchange actions`` names every code with its words; for a consultation, only advice-like codes."""
    out, _ = await cli("actions")
    assert "child_in_need_assessment_s17" in out and "Children Act 1989 s.17" in out
    assert "other" in out and "needs a narrative" in out
    listed = await cli_json("actions", "--kind", "consultation")
    codes = [a["code"] for a in listed["actions"]]
    assert "advice_given" in codes and "strategy_discussion_s47_enquiry" not in codes


async def test_a_referrals_loop_from_the_command_line(deployment: Deployment) -> None:
    """Report, query, answer and confirm from the CLI; outbox and loop say where each step stands, in words."""
    duty = _id(deployment, "csc-duty")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty]))
    packet_id = sent["packet_id"]
    recipient, sender = _as(deployment, "csc-duty"), _as(deployment, "school-dsl")
    await cli("ack", packet_id, *recipient)

    out, _ = await cli(
        "report", packet_id, "--action", "early_help_assessment", "--narrative", "Family support worker allocated.",
        *recipient,
    )
    assert "Reported 'early_help_assessment'" in out and "waiting for the sender" in out
    out, _ = await cli("outbox", *sender)
    assert "action reported, waiting for the sender to confirm or query" in out
    assert "latest action: early_help_assessment" in out
    out, _ = await cli("loop", packet_id, *sender)
    assert "verified" in out and "narrative: Family support worker allocated." in out

    out, _ = await cli("query", packet_id, "--recipient", duty, "--question", "When is the first visit?", *sender)
    assert "Queried" in out and "must answer by" in out
    out, _ = await cli("loop", packet_id, *recipient)
    assert "question: When is the first visit?" in out and "an answer owed" in out
    answered = await cli_json(
        "report", packet_id, "--action", "early_help_assessment", "--narrative", "Thursday morning.", *recipient
    )
    assert answered["answers"] is not None

    out, _ = await cli("confirm", packet_id, "--recipient", duty, *sender)
    assert "the loop is closed" in out
    loop = await cli_json("loop", packet_id, *sender)
    entry = loop["recipients"][0]
    assert entry["status"] == "confirmed"
    assert [s["step"] for s in entry["statements"]] == ["report", "query", "report", "confirm"]
    out, _ = await cli("outbox", *sender)
    assert "loop closed" in out


async def test_refusals_from_the_command_line_are_one_sentence(deployment: Deployment) -> None:
    """A report before acknowledging, or 'other' with no narrative, is refused plainly with its code."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([_id(deployment, "csc-duty")]))
    recipient = _as(deployment, "csc-duty")
    _, err = await cli("report", sent["packet_id"], "--action", "no_further_action", *recipient, expect=1)
    assert "Refused" in err and "lifecycle.transition_not_allowed" in err
    await cli("ack", sent["packet_id"], *recipient)
    _, err = await cli("report", sent["packet_id"], "--action", "other", *recipient, expect=1)
    assert "needs a narrative" in err and "loop.action_not_allowed" in err


async def test_reply_to_a_consultation_from_the_command_line(deployment: Deployment) -> None:
    """``exchange reply`` acknowledges the consultation and sends the advice; the practitioner reads it."""
    lead = _id(deployment, "csc-manager")
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(consultation([lead]))
    out, _ = await cli("reply", sent["packet_id"], "--advice", "Refer to early help.", *_as(deployment, "csc-manager"))
    assert "Acknowledged consultation" in out and "advice_given" in out
    out, _ = await cli("loop", sent["packet_id"], "--json", *_as(deployment, "school-dsl"))
    assert json.loads(out)["recipients"][0]["statements"][0]["note"] == {"narrative": "Refer to early help."}
