"""`exchange purposes | template | check | rules`: offline help, with --json, and check's exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.policy_commands import register
from exchange.policy import RULES, SERVICE_RULES
from exchange.policy.requests import ALL_REQUEST_RULES
from tests.factories import CSC_MEMBER, POLICE_MEMBER, make_packet_file


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="exchange")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def write(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "packet.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_rules_prints_every_rule_id(capsys: pytest.CaptureFixture[str]) -> None:
    """`exchange rules` prints every rule id, in text and JSON."""
    assert run("rules") == 0
    text = capsys.readouterr().out
    assert run("rules", "--json") == 0
    listed = {rule["id"] for rule in json.loads(capsys.readouterr().out)["rules"]}
    for rule in [*RULES, *SERVICE_RULES, *ALL_REQUEST_RULES]:
        assert rule.id in text
        assert rule.id in listed


def test_purposes_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    """`exchange purposes --json` is the catalogue as data."""
    assert run("purposes", "--json") == 0
    purposes = json.loads(capsys.readouterr().out)["purposes"]
    assert "anonymous_consultation" in {p["code"] for p in purposes}


def test_template_prints_a_packet_file_with_explanations(capsys: pytest.CaptureFixture[str]) -> None:
    """The template is JSON with _ explanations; --json separates the explanations from a clean template."""
    assert run("template", "imminent_harm_notification") == 0
    template = json.loads(capsys.readouterr().out)
    assert template["urgency"] == "immediate" and "_urgency" in template
    assert run("template", "imminent_harm_notification", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert not any(key.startswith("_") for key in document["template"])
    assert {item["path"] for item in document["explanations"]} >= {"/urgency", "/without_consent/reason"}


def test_template_for_an_unknown_purpose_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown purpose is an error that names the real ones."""
    assert run("template", "referral_to_anywhere") == 1
    assert "referral_to_childrens_social_care" in capsys.readouterr().err


def test_check_passes_a_good_packet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid packet file passes: exit 0."""
    path = write(tmp_path, make_packet_file())
    code = run("check", path, "--sender-kind", "education", "--recipient-kind", "children_social_care")
    assert code == 0
    assert capsys.readouterr().out.startswith("Passed")


def test_check_explains_every_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A packet breaking rules exits 1 and names each rule in words, with --json the same as data."""
    packet = make_packet_file(
        to=[CSC_MEMBER, POLICE_MEMBER], consent__given_by="subject", consent__subject_age_band="age_13_to_15"
    )
    path = write(tmp_path, packet)
    argv = ["check", path, "--recipient-kind", "children_social_care", "--recipient-kind", "police"]
    assert run(*argv) == 1
    out = capsys.readouterr().out
    assert "consent.under_16_needs_parent" in out and "recipient.agency_kind_not_allowed" in out
    assert "where: consent > given_by" in out
    assert run(*argv, "--json") == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passed"] is False
    assert {v["rule"] for v in verdict["violations"]} == {
        "consent.under_16_needs_parent",
        "recipient.agency_kind_not_allowed",
    }


def test_check_accepts_recipient_kinds_by_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--recipient-kind TO=KIND sets one recipient's kind."""
    path = write(tmp_path, make_packet_file())
    assert run("check", path, f"--recipient-kind={CSC_MEMBER}=police", "--json") == 1
    assert json.loads(capsys.readouterr().out)["violations"][0]["path"] == "/to/0"


def test_check_refuses_a_malformed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not JSON: exit 2. JSON in the wrong shape: exit 1 with every schema error."""
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    assert run("check", str(path)) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert run("check", write(tmp_path, make_packet_file(colour="blue"))) == 1
    assert "colour" in capsys.readouterr().err


def test_check_rejects_ambiguous_recipient_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two plain kinds for one recipient cannot be matched up: a usage error."""
    path = write(tmp_path, make_packet_file())
    assert run("check", path, "--recipient-kind", "police", "--recipient-kind", "health") == 2
    assert "--recipient-kind" in capsys.readouterr().err
