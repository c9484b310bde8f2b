"""HTTP Message Signatures (RFC 9421) as the exchange uses them, on top of ``http-message-signatures``.

Every API request is signed with the member's Ed25519 key over ``@method``, ``@path``,
``@query`` and ``content-digest`` (RFC 9530, SHA-256 of the exact body), with the ``created``
time, a random ``nonce`` and the ``keyid`` in the signature parameters. The server checks the
signature, rejects a ``created`` outside its window and remembers each ``(keyid, nonce)`` for
that window so a captured request cannot be replayed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import http_sf
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from exchange import crypto
from exchange.errors import AuthenticationFailed

COVERED_COMPONENTS = ("@method", "@path", "@query", "content-digest")
SIGNATURE_LABEL = "exchange"
SIGNATURE_TAG = "safeguarding-exchange"


@dataclass
class _Message:
    """The minimal request view the library's component resolver reads."""

    method: str
    url: str
    headers: MutableMapping[str, str]


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


def signature_parameters(headers: Mapping[str, str]) -> SignatureParameters:
    """Read ``keyid``, ``created`` and ``nonce`` from Signature-Input before verifying.

    The key must be looked up (asynchronously, in the directory) before the signature can be
    checked, so this parses the header first; :func:`verify_request` then checks everything.
    """
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


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    public_bytes: bytes,
    *,
    now: datetime,
    max_age: timedelta,
    clock_skew: timedelta,
) -> SignatureParameters:
    """Verify the request's signature, coverage, body digest and age; raise 401 otherwise."""
    params = signature_parameters(headers)
    created = datetime.fromtimestamp(params.created, tz=now.tzinfo)
    if created > now + clock_skew:
        raise AuthenticationFailed("The request's signature is dated in the future; check your clock.")
    if created < now - max_age:
        raise AuthenticationFailed("The request's signature is too old (stale); sign each request afresh.")

    class _Verifier(HTTPMessageVerifier):
        max_clock_skew = clock_skew

        def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
            # The library judges the times by the machine's own clock; judge them by the server's
            # clock, the one every deadline uses (injectable, so tests move time). "created" was
            # checked above against ``now``; an "expires" already past is refused here.
            expires = sig_input.params.get("expires")
            if expires is None:
                return
            if type(expires) is not int or datetime.fromtimestamp(expires, tz=now.tzinfo) < now - clock_skew:
                raise InvalidSignature('Signature "expires" parameter is malformed or in the past')

    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={params.key_id: crypto.http_verification_key(public_bytes)}, private_keys={}
        ),
    )
    message = _Message(method.upper(), url, dict(headers))
    try:
        verifier.verify(
            message,
            max_age=max_age + clock_skew,
            expect_tag=SIGNATURE_TAG,
            require_components=COVERED_COMPONENTS,
            body=body,
        )
    except (InvalidSignature, HTTPMessageSignaturesException):
        raise AuthenticationFailed(
            "The request's signature does not verify (wrong key, changed request or body)."
        ) from None
    return params
