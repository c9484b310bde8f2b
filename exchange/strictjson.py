"""Reading JSON from strangers: one meaning per document, and no input that can exhaust the parser.

RFC 8259 section 4 leaves duplicate member names to each parser ("the behavior ... is
unpredictable"): Python keeps the last, others the first, so one document could be read as two
different packets by two parties. Duplicates are refused. Nesting is bounded before parsing
(deeply nested input made the parser raise RecursionError, a 500), and lone surrogates, which no
UTF-8 store or log can hold, are refused too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from exchange.errors import InvalidRequest

#: Deeper than any document the exchange defines (a manifest is about 6 levels).
MAX_DEPTH = 32


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidRequest(f"The JSON body names {key!r} twice; each name may appear once in an object.")
        seen[key] = value
    return seen


#: A JSON string (its escapes included) and a bracket: what nesting depth is counted from.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")
#: A ``\\u`` escape in the surrogate range: only a document holding one can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects, ignoring brackets inside strings.

    Strings are cut out and the brackets found by regular expressions (C loops): a sealed packet's
    base64 body is most of its bytes, and a Python loop over every character cost half a millisecond.
    """
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("The JSON body holds a lone surrogate (\\ud800-\\udfff), which is not text.") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def loads(raw: bytes | str) -> Any:
    """Parse ``raw`` as JSON, refusing duplicate names, nesting past :data:`MAX_DEPTH`, lone surrogates,
    and the non-standard constants NaN and Infinity; every refusal is an :class:`InvalidRequest` (400)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not UTF-8 text.") from None
    if _depth(text) > MAX_DEPTH:
        raise InvalidRequest(f"The JSON body is nested more than {MAX_DEPTH} levels deep.")

    def no_constants(name: str) -> Any:
        raise InvalidRequest(f"The JSON body uses {name}, which is not JSON.")

    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constants)
    except ValueError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    # Bytes decoded as UTF-8 hold no surrogate themselves: only an escape can make one.
    if isinstance(raw, str) or _SURROGATE_ESCAPE.search(text):
        _check_text(value)
    return value
