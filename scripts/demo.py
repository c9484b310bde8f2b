"""A narrated demonstration of the exchange, driven through the ``exchange`` CLI.

Starts a real server in a temporary directory with the demo directory, then: a school's
designated safeguarding lead refers a child to children's social care, which opens, verifies
and acknowledges it, reports the action it will take, answers the DSL's query and has its report
confirmed (the loop closed); a packet that breaks the rules is refused with its explanation; a referral
without consent waits for the headteacher's signed approval before delivery; the police ask
children's social care for information and are declined with reasons; the school records a
decision not to share; an urgent referral nobody acknowledges escalates to the headteacher and
children's services' safeguarding lead once the demonstration moves its server's clock past the
deadline; the duty social worker checks the ledger holds no key for them they did not make; finally
the partnership's auditor exports the ledger and verifies it offline, and a hand-tampered copy fails.
Exits non-zero as soon as any step does not do what it should.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from exchange.examples import referral, referral_without_consent

STEP = 0


def say(text: str) -> None:
    global STEP
    STEP += 1
    print(f"\n[{STEP}] {text}", flush=True)


def fail(text: str) -> None:
    print(f"\nDEMO FAILED: {text}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def exchange(*args: str, expect: int = 0, show: bool = True) -> str:
    """Run one CLI command; print its output indented; fail the demo on an unexpected exit code."""
    result = subprocess.run(
        [sys.executable, "-m", "exchange.cli.main", *args], capture_output=True, text=True, timeout=120, check=False
    )
    shown = (result.stdout + result.stderr).strip()
    if show and shown:
        print("    $ exchange " + " ".join(a if " " not in a else repr(a) for a in args[:3]) + " ...")
        print("\n".join("    " + line for line in shown.splitlines()))
    if result.returncode != expect:
        fail(f"'exchange {args[0]}' exited {result.returncode}, expected {expect}:\n{shown}")
    return result.stdout


def as_json(*args: str) -> Any:
    return json.loads(exchange(*args, "--json", show=False))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if server.poll() is not None:
            fail("the server stopped during start-up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:  # noqa: S310 - loopback URL we built
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    fail("the server did not start")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="exchange-demo-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    keys = work / "keys" / "demo"
    say(f"Starting a server in {work} with an empty SQLite database and a demo directory")
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange.cli.main",
            "serve",
            "--data-dir",
            str(work / "var"),
            "--keys-dir",
            str(work / "keys"),
            "--port",
            str(port),
            "--seed-demo",
            # The demonstration moves its server's clock forward to show a deadline passing.
            "--demo-clock",
            str(work / "clock-offset"),
            "--deadline-check-seconds",
            "0.3",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(url, server)
        run_story(work, keys)
        overdue_story(work, keys)
        ledger_story(work, keys)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    print(f"\nDemo finished: every step did what it should. Files are in {work}")
    return 0


def run_loop(packet_id: str, dsl: list[str], duty: list[str], duty_id: str) -> None:
    """The feedback loop: never assume another professional acted, find out what they will do."""
    say("The social worker reports what they will do: an action code, a narrative sealed to the DSL, signed")
    exchange("actions", "--kind", "referral")
    first = "Strategy discussion with police and health tomorrow at 10:00; s.47 enquiry opened."
    exchange("report", packet_id, "--action", "strategy_discussion_s47_enquiry", "--narrative", first, *duty)

    say("The DSL reads the loop (every statement verified locally, the narrative opened) and asks a question")
    exchange("loop", packet_id, *dsl)
    exchange("query", packet_id, "--recipient", duty_id, "--question", "Should the school attend the discussion?", *dsl)

    say("The social worker answers the query with another report; the DSL confirms it and the loop is closed")
    exchange("loop", packet_id, *duty)
    answer = "Yes: the class teacher and the DSL are invited."
    exchange("report", packet_id, "--action", "strategy_discussion_s47_enquiry", "--narrative", answer, *duty)
    exchange("confirm", packet_id, "--recipient", duty_id, *dsl)
    outbox = as_json("outbox", *dsl)
    if outbox["packets"][0]["recipients"][0]["status"] != "confirmed":
        fail("the outbox does not show the loop closed")
    exchange("outbox", *dsl)


def run_story(work: Path, keys: Path) -> None:
    dsl, head, duty = (["--key", str(keys / f"{who}.json")] for who in ("school-dsl", "school-head", "csc-duty"))
    duty_id = as_json("whoami", *duty)["id"]

    say("The school's designated safeguarding lead checks who they are")
    exchange("whoami", *dsl)

    say("The DSL refers Jamie to children's social care: checked against the sharing rules, sealed, signed, sent")
    packet = work / "referral.json"
    packet.write_text(json.dumps(referral([duty_id]), indent=2))
    exchange("check", str(packet), "--sender-kind", "education", "--recipient-kind", "children_social_care")
    sent = json.loads(exchange("send", str(packet), *dsl, "--json", show=False))
    if sent["status"] != "delivered":
        fail(f"the referral was not delivered: {sent}")
    print(f"    delivered as {sent['packet_id']}; recipients must acknowledge by {sent['ack_due']} (UTC)")
    packet_id = sent["packet_id"]

    say("The duty social worker sees it in their inbox")
    exchange("inbox", *duty)

    say("They open it: the signature, digests and field list are verified, then the body is decrypted locally")
    opened = as_json("open", packet_id, *duty)
    if not opened["verified"]:
        fail("the packet did not verify")
    exchange("open", packet_id, *duty)

    say("They acknowledge it with a receipt signed over the manifest digest")
    exchange("ack", packet_id, *duty)

    say("The DSL's outbox shows it delivered, opened and acknowledged, with times")
    outbox = as_json("outbox", *dsl)
    if outbox["packets"][0]["recipients"][0]["status"] != "acknowledged":
        fail("the outbox does not show the acknowledgement")
    exchange("outbox", *dsl)

    run_loop(packet_id, dsl, duty, duty_id)

    say("A packet that breaks the rules is refused, with every broken rule explained (nothing is delivered)")
    bad = referral([duty_id])
    bad["fields"]["favourite_colour"] = {"value": "blue", "label": "fact_observed", "currency": "current"}
    del bad["fields"]["concern_category"]["author_role"]
    bad["consent"]["informed"]["why_told"] = False
    (work / "bad.json").write_text(json.dumps(bad, indent=2))
    exchange("send", str(work / "bad.json"), *dsl, expect=1)

    say("The parent refuses consent; the risk is of significant harm, so the DSL shares without consent")
    (work / "without-consent.json").write_text(json.dumps(referral_without_consent([duty_id]), indent=2))
    held = json.loads(exchange("send", str(work / "without-consent.json"), *dsl, "--json", show=False))
    if held["status"] != "awaiting_approval":
        fail(f"sharing without consent was not held for approval: {held}")
    print(f"    held for approval as {held['packet_id']}")
    if any(p["packet_id"] == held["packet_id"] for p in as_json("inbox", *duty)["packets"]):
        fail("the held packet reached the recipient before approval")

    say("The headteacher (a manager) reads the manifest — not the content — and approves with their signature")
    exchange("approvals", "list", *head)
    exchange("approvals", "approve", held["packet_id"], *head, "--reason-code", "risk_outweighs_refusal")

    say("Only now does children's social care receive it")
    if not any(p["packet_id"] == held["packet_id"] for p in as_json("inbox", *duty)["packets"]):
        fail("the approved packet was not delivered")
    exchange("ack", held["packet_id"], *duty)

    requests_story(work, keys)



def requests_story(work: Path, keys: Path) -> None:
    """A request declined with its reasons, and a decision not to share: both recorded, with reasons."""
    police, duty, dsl = (["--key", str(keys / f"{who}.json")] for who in ("police-officer", "csc-duty", "school-dsl"))
    csc = as_json("whoami", *duty)["agency"]

    say("The police ask children's social care for what it holds: a signed request, the child's details sealed")
    request = json.loads(exchange("template", "police_investigation", "--request", show=False))
    request |= {"from": f"agency:{csc}", "fields": ["child_address", "household_members"]}
    request["subject_identifier"] = "943 476 5919"
    request["details"] = {"child_name": "Jamie Example", "child_date_of_birth": "2017-03-02", "why": "Assault report"}
    (work / "request.json").write_text(json.dumps(request, indent=2))
    sent = json.loads(exchange("request", str(work / "request.json"), *police, "--json", show=False))
    exchange("requests", *police)

    say("The duty social worker opens it (the requester's signature verified, the details decrypted locally)")
    exchange("requests", sent["request_id"], *duty)

    say("They decline, with reasons and an explanation sealed to the officer")
    exchange(
        "decline",
        sent["request_id"],
        *duty,
        "--reason",
        "not_necessary_or_proportionate",
        "--explanation",
        "Our involvement ended in 2024; the school holds the current picture.",
    )

    say("The officer sees the decline, its reasons, and reads the explanation")
    opened = as_json("requests", sent["request_id"], *police)
    if opened["state"] != "declined" or not opened["explanation"]:
        fail(f"the decline did not reach the requester: {opened}")
    exchange("requests", sent["request_id"], *police)

    say("The school's DSL decides not to share a worry, and records that decision with reasons (nothing is sent)")
    exchange(
        "decide-not-to-share",
        *dsl,
        "--purpose",
        "referral_to_childrens_social_care",
        "--fields",
        "child_name,concern_description",
        "--reason",
        "not_necessary_or_proportionate",
        "--reasons",
        "One late pick-up; below threshold. We will monitor and talk to the parent.",
    )
    exchange("decisions", *dsl)



def overdue_story(work: Path, keys: Path) -> None:
    """Timeliness: an urgent referral nobody acknowledges escalates to the sender's manager and the lead."""
    dsl, head, duty, lead = (
        ["--key", str(keys / f"{who}.json")] for who in ("school-dsl", "school-head", "csc-duty", "csc-manager")
    )
    duty_id = as_json("whoami", *duty)["id"]
    say("An urgent referral (acknowledge within 4 hours) reaches the duty social worker, who is off sick")
    packet = work / "urgent.json"
    packet.write_text(json.dumps(referral([duty_id], urgency="urgent"), indent=2))
    sent = json.loads(exchange("send", str(packet), *dsl, "--json", show=False))
    print(f"    delivered as {sent['packet_id']}; acknowledge by {sent['ack_due']} (UTC)")

    say("Five hours pass (the demonstration moves its server's clock); the deadline worker escalates it")
    (work / "clock-offset").write_text(str(5 * 3600))
    found: list[Any] = []
    for _ in range(100):
        found = [
            e
            for e in as_json("escalations", "--open", *head)["escalations"]
            if e["packet_id"] == sent["packet_id"] and e["kind"] == "ack"
        ]
        if found:
            break
        time.sleep(0.2)
    if not found:
        fail("the overdue acknowledgement was not escalated")

    say("The headteacher (the sender's manager) and CSC's safeguarding lead both see it; the lead takes it in hand")
    exchange("escalations", "--open", *head)
    exchange("escalations", "ack", found[0]["escalation_id"], *lead)

    say("The duty worker acknowledges late: the escalation shows as resolved, and stays on record")
    exchange("ack", sent["packet_id"], *duty)
    exchange("escalations", *dsl)


def ledger_story(work: Path, keys: Path) -> None:
    """The record: the auditor exports the ledger and anyone verifies it offline; tampering is caught."""
    say("The duty social worker checks that every key the ledger holds for them is one they made")
    report = as_json("keys", "monitor", "--key", str(keys / "csc-duty.json"))
    if not all(key["yours"] for key in report["keys"]):
        fail("the ledger holds a key the duty social worker did not make")
    exchange("keys", "monitor", "--key", str(keys / "csc-duty.json"))

    auditor = ["--key", str(keys / "auditor.json")]
    say("The partnership's auditor exports the ledger (waiting for the newest events to be signed)")
    export = work / "ledger.jsonl"
    for _ in range(50):
        exchange("ledger", "export", *auditor, "-o", str(export), show=False)
        report = as_json(
            "ledger", "verify", "--export", str(export), "--server-key", str(work / "keys" / "server.ed25519.pub")
        )
        if report["entries"] >= 20:
            break
        time.sleep(0.2)
    exchange("ledger", "export", *auditor, "-o", str(export))

    say("Anyone with only the export and the server's public key verifies it offline (record log included)")
    server_key = str(work / "keys" / "server.ed25519.pub")
    exchange(
        "ledger",
        "verify",
        "--export",
        str(export),
        "--server-key",
        server_key,
        "--log",
        str(work / "var" / "record.jsonl"),
    )

    say("Someone edits one entry in a copy of the export by hand: verification fails and says where")
    lines = export.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"kind":"entry"' in line and i > 10)
    print(f"    changing the time of the entry on line {index + 1} of the export")
    record = json.loads(lines[index])

    original = base64.b64decode(record["entry"])
    entry = original.replace(b'"time":"2', b'"time":"1', 1)  # back-date one event by a millennium
    if entry == original:
        fail("the demo could not find the entry's time to change")
    record["entry"] = base64.b64encode(entry).decode()
    lines[index] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    tampered = work / "ledger-tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    exchange("ledger", "verify", "--export", str(tampered), "--server-key", server_key, expect=1)

    say("With the record log beside it, the verifier names the exact entry that was changed")
    record_log = str(work / "var" / "record.jsonl")
    exchange("ledger", "verify", "--export", str(tampered), "--server-key", server_key, "--log", record_log, expect=1)


if __name__ == "__main__":
    raise SystemExit(main())
