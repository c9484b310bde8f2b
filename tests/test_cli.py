"""The ``exchange`` command itself, run as a subprocess against a real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.cli import output
from exchange.client import ApiError
from exchange.examples import referral
from tests.conftest import Deployment


async def cli(*args: str, expect: int = 0) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == expect, (out + err).decode()
    assert b"Traceback" not in err
    return out.decode(), err.decode()


async def cli_json(*args: str) -> Any:
    out, _ = await cli(*args, "--json")
    return json.loads(out)


def run_init(root: Path, kind: str, admin_key: Path) -> subprocess.CompletedProcess[str]:
    """``exchange init`` for a fresh deployment under ``root``."""
    command = [sys.executable, "-m", "exchange.cli.main", "init", "--data-dir", str(root / "var")]
    command += ["--keys-dir", str(root / "keys"), "--agency-name", "Northshire", "--agency-kind", kind]
    command += ["--admin-name", "Systems admin", "--admin-key-file", str(admin_key), "--json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_init_creates_the_server_key_and_the_first_admin(tmp_path: Path) -> None:
    """``exchange init`` writes the server key (0600) and an admin key file that can sign requests."""
    admin_key = tmp_path / "admin.json"
    result = run_init(tmp_path, "police", admin_key)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["admin"].startswith("mem_")
    assert (tmp_path / "keys" / "server.ed25519.pem").stat().st_mode & 0o777 == 0o600
    assert admin_key.stat().st_mode & 0o777 == 0o600
    assert json.loads(admin_key.read_text())["member"] == created["admin"]


def test_init_refuses_an_unknown_agency_kind(tmp_path: Path) -> None:
    """A typo in the agency kind is a clear message, not a traceback."""
    result = run_init(tmp_path, "polis", tmp_path / "a.json")
    assert result.returncode == 1
    assert "Unknown agency kind 'polis'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


async def test_new_member_from_key_file_to_acknowledged_packet(deployment: Deployment, tmp_path: Path) -> None:
    """keys new → members add (the public enrolment file) → send → inbox → open → ack → outbox, all by CLI."""
    newcomer = tmp_path / "new-social-worker.json"
    await cli("keys", "new", str(newcomer))
    assert newcomer.stat().st_mode & 0o777 == 0o600
    enrolment = tmp_path / "new-social-worker.enrolment.json"
    assert "private" not in enrolment.read_text()
    admin = ["--key", str(deployment.key_dir / "csc-admin.json"), "--server", deployment.url]
    added = await cli_json(
        "members",
        "add",
        *admin,
        "--name",
        "New social worker",
        "--roles",
        "practitioner",
        "--member-key",
        str(enrolment),
    )
    mine = ["--key", str(newcomer), "--server", deployment.url]
    assert (await cli_json("whoami", *mine))["id"] == added["id"]
    # The key file learnt who it belongs to on that first use.
    assert json.loads(newcomer.read_text())["member"] == added["id"]

    packet = tmp_path / "referral.json"
    packet.write_text(json.dumps(referral([added["id"]])))
    dsl = ["--key", str(deployment.key_dir / "school-dsl.json"), "--server", deployment.url]
    out, _ = await cli("send", str(packet), *dsl)
    assert "checked against the sharing rules and delivered" in out

    inbox = await cli_json("inbox", *mine)
    packet_id = inbox["packets"][0]["packet_id"]
    out, _ = await cli("open", packet_id, *mine)
    assert "Jamie Example" in out and "verified" in out
    await cli("ack", packet_id, *mine)
    outbox = await cli_json("outbox", *dsl)
    assert outbox["packets"][0]["recipients"][0]["status"] == "acknowledged"


async def test_refused_send_explains_each_rule(deployment: Deployment, tmp_path: Path) -> None:
    """A packet breaking the rules exits 1 and prints each rule id with its sentence."""
    bad = referral([deployment.credentials("csc-duty").member_id or ""])
    del bad["fields"]["child_name"]
    packet = tmp_path / "bad.json"
    packet.write_text(json.dumps(bad))
    _, err = await cli(
        "send", str(packet), "--key", str(deployment.key_dir / "school-dsl.json"), "--server", deployment.url, expect=1
    )
    assert "[necessity.required_field_missing]" in err
    assert "Nothing was delivered" in err


async def test_operator_sets_an_agencys_purposes(deployment: Deployment) -> None:
    """After limiting children's services to early help, a referral to them is refused by that rule."""
    duty = deployment.credentials("csc-duty")
    server = ["--data-dir", str(deployment.config.data_dir), "--keys-dir", str(deployment.config.keys_dir)]
    result = await cli_json(
        "agencies", "purposes", duty.agency_id or "", *server, "--receive", "early_help_coordination"
    )
    assert result["receive_purposes"] == ["early_help_coordination"]
    _, err = await cli("agencies", "purposes", duty.agency_id or "", *server, "--receive", "no_such_purpose", expect=1)
    assert "Unknown purpose codes: no_such_purpose" in err
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(ApiError) as refused:
            await dsl.send(referral([duty.member_id or ""]))
    assert "directory.purpose_not_permitted" in {v["rule"] for v in refused.value.problem["violations"]}


async def test_ledger_receipt_and_proofs_from_the_cli(deployment: Deployment, tmp_path: Path) -> None:
    """A sender checks their receipt; an auditor checks inclusion and consistency proofs, all locally verified."""
    duty = deployment.credentials("csc-duty").member_id or ""
    server_key = ["--server-key", str(deployment.config.server_public_key_path)]
    dsl_key = ["--key", str(deployment.key_dir / "school-dsl.json"), "--server", deployment.url]
    auditor = ["--key", str(deployment.key_dir / "auditor.json"), "--server", deployment.url]
    earlier = (await cli_json("ledger", "head", *auditor))["head"]["size"]
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([duty]))
    for _ in range(50):  # heads are signed in the background, within tens of milliseconds here
        head = await cli_json("ledger", "head", *auditor)
        if head["head"]["size"] > sent["ledger"]["seq"]:
            break
        await asyncio.sleep(0.05)
    receipt = await cli_json("ledger", "receipt", str(sent["ledger"]["seq"]), *dsl_key, *server_key)
    assert receipt["verified"] is True
    assert receipt["head_signature_checked"] is True
    # The head verified is kept in the key file's trust file; the next receipt must extend it.
    kept = json.loads((deployment.key_dir / "school-dsl.trust.json").read_text(encoding="utf-8"))
    assert kept["head"]["size"] == receipt["size"]
    again = await cli_json("ledger", "receipt", str(sent["ledger"]["seq"]), *dsl_key, *server_key)
    assert again["extends_head_seen"] == receipt["size"]
    inclusion = await cli_json("ledger", "proof", "--seq", "3", *auditor, *server_key)
    assert inclusion["proof_type"] == "inclusion"
    consistency = await cli_json("ledger", "proof", "--from", str(earlier), *auditor, *server_key)
    assert consistency["proof_type"] == "consistency"
    shown = await cli_json("ledger", "show", "--packet", sent["packet_id"], *auditor)
    assert [e["entry"]["type"] for e in shown["entries"]] == ["packet.submitted", "packet.delivered"]


@pytest.mark.parametrize(
    ("zone", "server_time", "shown"),
    [
        ("Europe/London", "2026-07-13T15:00:00.000Z", "Mon 13 Jul 2026 16:00 BST"),
        ("Europe/London", "2026-12-29T16:00:00.000Z", "Tue 29 Dec 2026 16:00 GMT"),
        ("UTC", "2026-07-13T15:00:00.000Z", "Mon 13 Jul 2026 15:00 UTC"),
    ],
)
def test_times_are_shown_on_the_readers_clock_with_the_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str, server_time: str, shown: str
) -> None:
    """A deadline the server gives in UTC is printed in the practitioner's own time, never unlabelled."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert output.local_time(server_time) == shown
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_consult_refuses_identifiers_locally_and_records_an_override(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``exchange consult`` refuses an NHS number before sending; ``--allow-identifiers`` sends it, recorded."""
    from exchange.examples import consultation

    lead = deployment.credentials("csc-manager").member_id or ""
    packet = consultation([lead])
    packet["fields"]["question_asked"]["value"] = "Child's NHS number is 943 476 5919: what next?"
    path = tmp_path / "consultation.json"
    path.write_text(json.dumps(packet))
    key = str(deployment.key_dir / "school-dsl.json")
    _, err = await cli("consult", str(path), "--key", key, "--server", deployment.url, expect=1)
    assert "NHS number" in err and "943 476 5919" not in err
    async with deployment.client("csc-manager") as adviser:
        assert await adviser.inbox() == []
    override = ("--allow-identifiers", "adviser_needs_it")
    sent = await cli_json("consult", str(path), "--key", key, "--server", deployment.url, *override)
    assert sent["status"] == "delivered"


async def test_inbox_pages_and_filters_from_the_cli(deployment: Deployment) -> None:
    """``exchange inbox --state --limit`` shows one page and says how to see the rest."""
    duty = deployment.credentials("csc-duty").member_id or ""
    async with deployment.client("school-dsl") as dsl:
        for _ in range(3):
            await dsl.send(referral([duty]))
    key = str(deployment.key_dir / "csc-duty.json")
    out, _ = await cli("inbox", "--key", key, "--server", deployment.url, "--limit", "2", "--state", "delivered")
    assert "2 packet(s)" in out and "--cursor" in out
    page = await cli_json("inbox", "--key", key, "--server", deployment.url, "--limit", "2")
    rest = await cli_json("inbox", "--key", key, "--server", deployment.url, "--cursor", page["next_cursor"])
    assert len(page["packets"]) == 2 and len(rest["packets"]) == 1 and rest["next_cursor"] is None
