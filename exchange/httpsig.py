"""HTTP Message Signatures (RFC 9421) as the exchange uses them, on top of ``http-message-signatures``.

Every API request is signed with the member's Ed25519 key over ``@method``, ``@path``,
``@query`` and ``content-digest`` (RFC 9530, SHA-256 of the exact body), with the ``created``
time, a random ``nonce`` and the ``keyid`` in the signature parameters. Because the body is
covered through its digest, the server verifies the signature over the headers alone
(:func:`verify_signature`) before it reads any body, then checks the body against the signed
digest (:func:`verify_content_digest`). It rejects a ``created`` outside its window and remembers
each ``(keyid, nonce)`` for that window so a captured request cannot be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import http_sf
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from exchange import crypto
from exchange.errors import AuthenticationFailed, CryptoError, HeaderTooLarge

COVERED_COMPONENTS = ("@method", "@path", "@query", "content-digest")
SIGNATURE_LABEL = "exchange"
SIGNATURE_TAG = "safeguarding-exchange"


@dataclass
class _Message:
    """The minimal request view the library's component resolver reads."""

    method: str
    url: str
    #: The signer writes its headers into a dict given here; the verifier only reads.
    headers: Mapping[str, str]


def sign_request(
    method: str,
    url: str,
    body: bytes,
    key: crypto.SigningKey,
    *,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the headers (Content-Digest, Signature-Input, Signature) that sign this request."""
    headers: dict[str, str] = {}
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key.key_id: key.http_signing_key()}),
    )
    signer.sign(
        _Message(method.upper(), url, headers),
        key_id=key.key_id,
        created=now,
        nonce=nonce if nonce is not None else secrets.token_urlsafe(18),
        label=SIGNATURE_LABEL,
        tag=SIGNATURE_TAG,
        covered_component_ids=COVERED_COMPONENTS,
        body=body,
    )
    return headers


@dataclass(frozen=True)
class SignatureParameters:
    key_id: str
    created: int
    nonce: str


#: Bounds on the signature fields, checked before they are parsed. A real Signature-Input is about
#: 200 bytes, a Signature about 100 and a Content-Digest about 60 (SHA-512: 100); anything much larger
#: is not one of ours, and parsing it would be work done for an attacker.
MAX_FIELD_BYTES = {"Signature-Input": 1024, "Signature": 512, "Content-Digest": 512}
_BOUNDED = tuple(name.lower() for name in MAX_FIELD_BYTES)


#: The one spelling of a signature our own signers (SDK, CLI, web) write, every value in a narrow
#: alphabet so that RFC 8941's serialisation of it is the text itself. A request signed so is
#: verified without the library's general parser (:func:`_canonical`); any other spelling, however
#: valid, takes the library's path, and tests/test_httpsig.py checks the two always agree.
_CANONICAL_INPUT = re.compile(
    r'exchange=(\("@method" "@path" "@query" "content-digest"\);created=([1-9][0-9]{0,14});'
    r'keyid="([A-Za-z0-9:_.-]{1,128})";(?:alg="ed25519";)?nonce="([A-Za-z0-9_-]{1,128})";'
    r'tag="safeguarding-exchange")'
)
_CANONICAL_SIGNATURE = re.compile(r"exchange=:([A-Za-z0-9+/]{86}==):")
_CANONICAL_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")
#: A signed URL whose path and query the library would take with the same spelling.
_CANONICAL_URL = re.compile(
    r"https?://[A-Za-z0-9.:-]+((?:/|[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+)(?:\?((?:[A-Za-z0-9._~=&+-]|%[0-9A-Fa-f]{2})*))?"
)
_CANONICAL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_DIGEST_COMPONENT = '"content-digest"'


@dataclass(frozen=True)
class _Canonical:
    params: SignatureParameters
    signature_params: str
    signature: bytes
    digest: str


def _single_lines(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The three signature fields, if each was sent on exactly one line; else None."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _BOUNDED:
            if lowered in found:
                return None
            found[lowered] = value
    return found if len(found) == len(_BOUNDED) else None


def _canonical(headers: Mapping[str, str]) -> _Canonical | None:
    lines = _single_lines(headers)
    if lines is None:
        return None
    given = _CANONICAL_INPUT.fullmatch(lines["signature-input"])
    signature = _CANONICAL_SIGNATURE.fullmatch(lines["signature"])
    if given is None or signature is None or _CANONICAL_DIGEST.fullmatch(lines["content-digest"]) is None:
        return None
    params = SignatureParameters(given[3], int(given[2]), given[4])
    return _Canonical(params, given[1], base64.b64decode(signature[1]), lines["content-digest"])


def signature_parameters(headers: Mapping[str, str]) -> SignatureParameters:
    """Read ``keyid``, ``created`` and ``nonce`` from Signature-Input before verifying.

    The key must be looked up (asynchronously, in the directory) before the signature can be
    checked, so this parses the header first; :func:`verify_signature` then checks everything.
    Raises :class:`HeaderTooLarge` (431) for a signature field over its bound, else 401.
    """
    canonical = _canonical(headers)
    if canonical is not None:  # one line each, every value within its bound: nothing to size or parse
        return canonical.params
    # items(), not get(): a field sent on several lines counts with all of them (the verifier joins them).
    sizes = dict.fromkeys(_BOUNDED, 0)
    for name, value in headers.items():
        if name.lower() in sizes:
            sizes[name.lower()] += len(value)
    for name, limit in MAX_FIELD_BYTES.items():
        if sizes[name.lower()] > limit:
            raise HeaderTooLarge(f"The {name} header is longer than {limit} characters; no signature of ours is.")
    raw = headers.get("Signature-Input")
    if not raw or not headers.get("Signature"):
        raise AuthenticationFailed("This request is not signed. Sign every request with your member key.")
    try:
        parsed: Any = http_sf.parse(raw.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, ValueError, UnicodeEncodeError):
        raise AuthenticationFailed("The Signature-Input header is malformed.") from None
    member = parsed.get(SIGNATURE_LABEL) if isinstance(parsed, dict) else None
    if not isinstance(member, tuple) or len(parsed) != 1:
        raise AuthenticationFailed(f"Expected exactly one signature labelled {SIGNATURE_LABEL!r}.")
    params = member[1]
    key_id, created, nonce = params.get("keyid"), params.get("created"), params.get("nonce")
    if not isinstance(key_id, str) or type(created) is not int or not isinstance(nonce, str) or not nonce:
        raise AuthenticationFailed("The signature must carry keyid, created and nonce parameters.")
    if len(nonce) > 128:
        raise AuthenticationFailed("The signature nonce is too long.")
    return SignatureParameters(key_id, created, nonce)


def check_created(params: SignatureParameters, *, now: datetime, max_age: timedelta, clock_skew: timedelta) -> None:
    """Refuse (401) a ``created`` in the future beyond ``clock_skew`` or older than ``max_age``.

    Compared as whole seconds since the epoch, never turned into a datetime: an absurd ``created``
    (RFC 8941 allows up to 15 digits, e.g. year 31 million) is simply out of the window.
    """
    now_seconds = int(now.timestamp())
    if params.created > now_seconds + int(clock_skew.total_seconds()):
        raise AuthenticationFailed("The request's signature is dated in the future; check your clock.")
    if params.created < now_seconds - int(max_age.total_seconds()):
        raise AuthenticationFailed("The request's signature is too old (stale); sign each request afresh.")


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that verified over the request's headers; its body is still to be checked."""

    params: SignatureParameters
    #: Each covered component with the value the signature covers (``"content-digest"`` among them).
    covered: Mapping[str, str]


_DOES_NOT_VERIFY = "The request's signature does not verify (wrong key or changed request)."


def verify_signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    public_bytes: bytes,
    *,
    now: datetime,
    max_age: timedelta,
    clock_skew: timedelta,
) -> VerifiedSignature:
    """Verify the signature over the headers alone (RFC 9421): no body is needed, or read.

    The covered components are ``@method``, ``@path``, ``@query`` and ``content-digest``, so a
    request with a body but no Content-Digest does not verify. ``url`` supplies only the path and
    query. Checks the ``created`` window (:func:`check_created`) and refuses an ``expires`` already
    past. Raises :class:`AuthenticationFailed` (401). Check the body afterwards with
    :func:`verify_content_digest`.
    """
    canonical = _canonical(headers)
    params = canonical.params if canonical is not None else signature_parameters(headers)
    check_created(params, now=now, max_age=max_age, clock_skew=clock_skew)
    target = _CANONICAL_URL.fullmatch(url)
    if canonical is not None and target is not None and target[1][0] == "/" and method in _CANONICAL_METHODS:
        # RFC 9421 section 2.5's signature base, built as the library builds it for this spelling.
        base = (
            f'"@method": {method}\n"@path": {target[1]}\n"@query": ?{target[2] or ""}\n'
            f'{_DIGEST_COMPONENT}: {canonical.digest}\n"@signature-params": {canonical.signature_params}'
        )
        try:
            crypto.verify_signature(public_bytes, base.encode("ascii"), canonical.signature)
        except CryptoError:
            raise AuthenticationFailed(_DOES_NOT_VERIFY) from None
        return VerifiedSignature(params, {_DIGEST_COMPONENT: canonical.digest})
    return _verify_with_library(method, url, headers, public_bytes, params, now=now, clock_skew=clock_skew)


def _verify_with_library(
    method: str,
    url: str,
    headers: Mapping[str, str],
    public_bytes: bytes,
    params: SignatureParameters,
    *,
    now: datetime,
    clock_skew: timedelta,
) -> VerifiedSignature:
    """Every spelling RFC 9421 allows, through ``http-message-signatures``."""
    now_seconds = int(now.timestamp())
    skew_seconds = int(clock_skew.total_seconds())

    class _Verifier(HTTPMessageVerifier):
        max_clock_skew = clock_skew

        def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
            # The library judges the times by the machine's own clock; judge them by the given
            # ``now``, as whole seconds (never a datetime: see check_created). "created" was
            # checked above; an "expires" already past is refused here.
            expires = sig_input.params.get("expires")
            if expires is None:
                return
            if type(expires) is not int or expires < now_seconds - skew_seconds:
                raise InvalidSignature('Signature "expires" parameter is malformed or in the past')

    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={params.key_id: crypto.http_verification_key(public_bytes)}, private_keys={}
        ),
    )
    # Every field line is kept (a repeated Content-Digest is joined, as RFC 9421 section 2.1 says).
    message = _Message(method.upper(), url, headers)
    try:
        results = verifier.verify(
            message, max_age=None, expect_tag=SIGNATURE_TAG, require_components=COVERED_COMPONENTS
        )
    except (InvalidSignature, HTTPMessageSignaturesException):
        raise AuthenticationFailed(_DOES_NOT_VERIFY) from None
    if len(results) != 1:  # signature_parameters admits one signature; fail closed all the same
        raise AuthenticationFailed(f"Expected exactly one signature labelled {SIGNATURE_LABEL!r}.")
    return VerifiedSignature(params, dict(results[0].covered_components))


def verify_content_digest(verified: VerifiedSignature, body: bytes) -> None:
    """Check the body against the Content-Digest the signature covers (RFC 9530); 401 otherwise."""
    if len(verified.covered) == 1 and _CANONICAL_DIGEST.fullmatch(verified.covered.get(_DIGEST_COMPONENT, "")):
        expected = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"
        if not hmac.compare_digest(expected, verified.covered[_DIGEST_COMPONENT]):
            raise AuthenticationFailed("The request's body does not match its signed Content-Digest.")
        return
    try:
        covered = ContentDigest.verify_components(verified.covered, body)
    except (InvalidSignature, HTTPMessageSignaturesException):
        covered = False
    if not covered:
        raise AuthenticationFailed("The request's body does not match its signed Content-Digest.")
