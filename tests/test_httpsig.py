"""RFC 9421 verification: the short path for our own signers' spelling agrees with the library's.

``exchange.httpsig`` verifies a request signed in the exact spelling the exchange's signers write
without the library's general parser. These property tests make many requests, valid and
altered (other parameter orders, whitespace, other tags and algorithms, repeated fields, odd
paths, changed bodies, wrong keys), and check that the verdict (and on success the covered
digest) is the library's, every time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange import crypto, httpsig
from exchange.errors import AuthenticationFailed, HeaderTooLarge

KEY = crypto.SigningKey.generate()
OTHER = crypto.SigningKey.generate()
NOW = datetime.now(UTC)
WINDOW = {"max_age": timedelta(seconds=300), "clock_skew": timedelta(seconds=5)}
ORIGIN = "http://exchange.invalid"

paths = st.sampled_from(
    ["/v1/packets", "/v1/packets/pkt_1/acknowledgement", "/v1/ledger", "/", "/v1/a%2Fb", "/v1/%zz", "/v1/a b",
     "/v1/\u00e9", "/v1//x", "/v1/x;y", "/v1/x:y", "/v1/x@y"]
)
queries = st.sampled_from(["", "?", "?after=abc", "?member=m1&member=m2", "?a=%41", "?a=%4", "?a=b c", "?x=\u00e9"])
bodies = st.binary(max_size=40)

Headers = list[tuple[str, str]]


class _Lines(dict[str, str]):
    """Header lines as a mapping whose items() yields every line (as aiohttp's multidict does)."""

    def __init__(self, lines: Headers) -> None:
        super().__init__()
        self.lines = lines
        for name, value in lines:
            self[name] = value if name not in self else self[name] + ", " + value

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(self.lines)


def _alter(headers: dict[str, str], how: str, method: str, path: str, query: str) -> Headers:
    lines = list(headers.items())
    given = headers["Signature-Input"]
    if how.startswith("resigned "):
        # Another spelling of the parameters, really signed: over the signature base an RFC 9421
        # verifier builds from this text as given (the library, the oracle here, decides).
        altered = _alter(headers, how.removeprefix("resigned "), method, path, query)
        spelled = dict(altered)["Signature-Input"].removeprefix("exchange=")
        base = (
            f'"@method": {method}\n"@path": {path}\n"@query": ?{query.removeprefix("?")}\n'
            f'"content-digest": {headers["Content-Digest"]}\n"@signature-params": {spelled}'
        )
        return _replace(altered, "Signature", "exchange=:" + base64.b64encode(KEY.sign(base.encode())).decode() + ":")
    changes: dict[str, Callable[[], Headers]] = {
        "none": lambda: lines,
        "no-alg": lambda: _replace(lines, "Signature-Input", given.replace('alg="ed25519";', "")),
        "other-alg": lambda: _replace(lines, "Signature-Input", given.replace('alg="ed25519"', 'alg="hmac-sha256"')),
        "other-tag": lambda: _replace(lines, "Signature-Input", given.replace("safeguarding-exchange", "other")),
        "spaces": lambda: _replace(lines, "Signature-Input", given.replace(";", " ;", 1)),
        "order": lambda: _replace(lines, "Signature-Input", _swap_params(given)),
        "expires": lambda: _replace(lines, "Signature-Input", given + ";expires=1"),
        "label": lambda: _replace(lines, "Signature-Input", given.replace("exchange=", "other=", 1)),
        "twice": lambda: [*lines, ("Content-Digest", headers["Content-Digest"])],
        "sha-512": lambda: _replace(lines, "Content-Digest", "sha-512=:" + "A" * 86 + "==:"),
        "flipped": lambda: _replace(lines, "Signature", _flip(headers["Signature"])),
        "created": lambda: _replace(lines, "Signature-Input", given.replace(";created=", ";created=0", 1)),
    }
    return changes[how]()


def _replace(lines: Headers, name: str, value: str) -> Headers:
    return [(n, value if n == name else v) for n, v in lines]


def _swap_params(given: str) -> str:
    head, _, rest = given.partition(";")
    params = rest.split(";")
    return ";".join([head, *params[1:], params[0]])


def _flip(signature: str) -> str:
    middle = len(signature) // 2
    return signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]


def _verdict(verify: Callable[..., Any], *args: object) -> tuple[str, str | None]:
    try:
        verified = verify(*args, now=NOW, **WINDOW)
    except (AuthenticationFailed, HeaderTooLarge) as refused:
        return ("refused", type(refused).__name__)
    return ("accepted", verified.covered['"content-digest"'])


def _library(method: str, url: str, headers: _Lines, public: bytes, *, now: datetime, **window: timedelta) -> object:
    params = httpsig.signature_parameters(headers)
    httpsig.check_created(params, now=now, max_age=window["max_age"], clock_skew=window["clock_skew"])
    return httpsig._verify_with_library(method, url, headers, public, params, now=now, clock_skew=window["clock_skew"])


hows = st.sampled_from(
    ["none", "none", "no-alg", "other-alg", "other-tag", "spaces", "order", "expires", "label", "twice", "sha-512",
     "flipped", "created", "resigned no-alg", "resigned order", "resigned expires", "resigned created",
     "resigned spaces", "resigned other-tag"]
)


@given(st.sampled_from(["GET", "POST", "DELETE", "post"]), paths, queries, bodies, hows, st.booleans(),
       st.sampled_from(["", "/v1/other", "?changed=1"]))
def test_the_short_path_gives_the_librarys_verdict(
    method: str, path: str, query: str, body: bytes, how: str, right_key: bool, moved: str
) -> None:
    signed_url = ORIGIN + path + query
    try:
        headers = httpsig.sign_request(method, signed_url, body, KEY, now=NOW)
    except Exception:  # noqa: BLE001 - a URL the library will not sign is not a request anyone sends
        return
    lines = _Lines(_alter(headers, how, method.upper(), path, query))
    # The server's URL: as signed, or with its path or query changed on the way.
    url = signed_url if not moved else (ORIGIN + moved if moved.startswith("/") else ORIGIN + path + moved)
    public = (KEY if right_key else OTHER).public_bytes
    ours = _verdict(httpsig.verify_signature, method.upper(), url, lines, public)
    theirs = _verdict(_library, method.upper(), url, lines, public)
    assert ours == theirs


@given(bodies, bodies)
def test_the_digest_check_agrees_with_the_librarys(signed: bytes, sent: bytes) -> None:
    headers = _Lines(list(httpsig.sign_request("POST", ORIGIN + "/v1/packets", signed, KEY, now=NOW).items()))
    short = httpsig.verify_signature("POST", ORIGIN + "/v1/packets", headers, KEY.public_bytes, now=NOW, **WINDOW)
    full = _library("POST", ORIGIN + "/v1/packets", headers, KEY.public_bytes, now=NOW, **WINDOW)
    assert len(short.covered) == 1 and len(full.covered) > 1  # type: ignore[attr-defined]
    outcomes = []
    for verified in (short, full):
        try:
            httpsig.verify_content_digest(verified, sent)  # type: ignore[arg-type]
            outcomes.append(True)
        except AuthenticationFailed:
            outcomes.append(False)
    assert outcomes == [signed == sent] * 2


def test_our_signers_spelling_takes_the_short_path() -> None:
    """The SDK's own headers are the spelling the short path reads (else it would never be taken)."""
    headers = httpsig.sign_request("POST", ORIGIN + "/v1/packets?a=b", b"{}", KEY, now=NOW)
    url = ORIGIN + "/v1/packets?a=b"
    verified = httpsig.verify_signature("POST", url, headers, KEY.public_bytes, now=NOW, **WINDOW)
    assert list(verified.covered) == ['"content-digest"']


def test_a_short_path_signature_from_another_key_is_refused() -> None:
    headers = httpsig.sign_request("POST", ORIGIN + "/v1/packets", b"{}", OTHER, now=NOW)
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        httpsig.verify_signature("POST", ORIGIN + "/v1/packets", headers, KEY.public_bytes, now=NOW, **WINDOW)


@pytest.mark.parametrize("how", ["none", "resigned no-alg"])
def test_both_spellings_of_ours_verify_on_the_short_path(how: str) -> None:
    """With and without alg="ed25519" (RFC 9421 makes it optional), our spelling verifies there."""
    url = ORIGIN + "/v1/packets"
    lines = _Lines(_alter(httpsig.sign_request("POST", url, b"{}", KEY, now=NOW), how, "POST", "/v1/packets", ""))
    verified = httpsig.verify_signature("POST", url, lines, KEY.public_bytes, now=NOW, **WINDOW)
    assert list(verified.covered) == ['"content-digest"']
    assert _verdict(_library, "POST", url, lines, KEY.public_bytes)[0] == "accepted"
