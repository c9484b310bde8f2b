"""What the authorization matrix (tests/test_authorization.py) found, each pinned by a named test.

Every status the matrix asserts matched what the service did; these are the places where a hidden
resource still gave itself away (by its words, or by a check made before the caller's right to it),
and where HEAD, the twin aiohttp gives every GET, misbehaved. Each test failed before its fix.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from exchange import crypto, httpsig, statements
from exchange.client import ApiError, ExchangeClient
from exchange.domain import new_id, utc_now
from exchange.examples import referral
from tests.conftest import Deployment


async def _problem(client: ExchangeClient, method: str, path: str, document: Any = None) -> tuple[Any, ...]:
    try:
        await client.request(method, path, document)
    except ApiError as error:
        return (error.http_status, error.problem.get("code"), error.problem.get("detail"))
    raise AssertionError(f"{method} {path} was allowed")


def _label_id(deployment: Deployment, label: str) -> str:
    member = deployment.credentials(label).member_id
    assert member is not None
    return member


async def _sent_to_duty(deployment: Deployment) -> str:
    """The id of a referral the school's lead sent the duty social worker."""
    async with deployment.client("school-dsl") as dsl:
        sent = await dsl.send(referral([_label_id(deployment, "csc-duty")]))
    return str(sent["packet_id"])


async def test_finding_a_non_recipients_acknowledgement_is_hidden_whatever_it_signs(deployment: Deployment) -> None:
    """Finding (authorization matrix): an acknowledgement's signature was checked before the caller's copy, so
    a non-recipient guessing a packet id got 422 for a real packet and 404 for none; now 404 for both."""
    packet_id = await _sent_to_duty(deployment)
    async with deployment.client("police-officer") as police:
        signing = police.credentials.signing
        guessed = statements.acknowledgement_statement(packet_id, "sha256:" + "0" * 64, police.member_id)
        document = {"key_id": signing.key_id, "signature": crypto.b64encode(signing.sign(guessed))}
        real = await _problem(police, "POST", f"/v1/packets/{packet_id}/acknowledgement", document)
        missing = await _problem(police, "POST", f"/v1/packets/{new_id('pkt')}/acknowledgement", document)
    assert real == missing
    assert real[0] == 404


async def test_finding_a_report_or_review_on_someone_elses_packet_reads_as_on_none(deployment: Deployment) -> None:
    """Finding (authorization matrix): reporting on or reviewing a packet one is no party to said "No such
    packet in your inbox/outbox" for a real packet and "No such packet" for none; now the same words."""
    packet_id = await _sent_to_duty(deployment)
    async with deployment.client("police-officer") as police:
        report = {"action": "information_noted", "answers": None, "key_id": "ed25519:" + "0" * 32, "signature": ""}
        review = {"decision": "confirm", "answers": "stm_" + "0" * 40, "key_id": "ed25519:" + "0" * 32, "signature": ""}
        duty = _label_id(deployment, "csc-duty")
        for suffix, document in (("reports", report), (f"recipients/{duty}/review", review)):
            real = await _problem(police, "POST", f"/v1/packets/{packet_id}/{suffix}", document)
            missing = await _problem(police, "POST", f"/v1/packets/{new_id('pkt')}/{suffix}", document)
            assert real == missing, suffix
            assert real[0] == 404


async def test_finding_a_receipt_for_someone_elses_entry_reads_as_for_none(deployment: Deployment) -> None:
    """Finding (authorization matrix): a receipt for another member's ledger entry said "not among your
    events", for a seq past the end "no such entry", so anyone could learn the ledger's size; now the same."""
    await _sent_to_duty(deployment)
    async with deployment.client("police-officer") as police:
        theirs = await _problem(police, "GET", "/v1/ledger/receipts/1")
        beyond = await _problem(police, "GET", f"/v1/ledger/receipts/{10**12}")
    assert theirs == beyond
    assert theirs[0] == 404


async def test_finding_head_of_a_ledger_export_sends_no_body(deployment: Deployment) -> None:
    """Finding (authorization matrix): HEAD of a streamed export (the ledger's, a subject's) wrote the body
    after the headers, which the client reads as the next response: the connection broke."""
    auditor = deployment.credentials("auditor").signing
    pseudonym = "ab" * 32
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/ledger/export", f"/v1/ledger/subjects/{pseudonym}/export", "/v1/me"):
            url = deployment.url + path
            for method in ("HEAD", "GET"):
                headers = httpsig.sign_request(method, url, b"", auditor, now=utc_now())
                async with session.request(method, url, headers=headers) as response:
                    assert response.status == 200, (method, path)
                    body = await response.read()
                    assert (body == b"") is (method == "HEAD"), (method, path)


async def test_finding_head_of_a_packet_does_not_open_it(deployment: Deployment) -> None:
    """Finding (authorization matrix): HEAD of a packet ran the fetch, so it recorded the copy as opened
    with no content sent (and the sender could no longer recall it); HEAD is not served there now."""
    packet_id = await _sent_to_duty(deployment)
    async with deployment.client("csc-duty") as duty:
        status = (await _problem(duty, "HEAD", f"/v1/packets/{packet_id}"))[0]
    assert status == 405
    async with deployment.client("school-dsl") as dsl:
        recalled = await dsl.recall(packet_id, "sent_to_wrong_recipient")
    assert recalled["status"] == "recalled"
