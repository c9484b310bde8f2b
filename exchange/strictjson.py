"""Reading JSON from strangers: one meaning per document, and no input that can exhaust the parser.

RFC 8259 section 4 leaves duplicate member names to each parser ("the behavior ... is
unpredictable"): Python keeps the last, others the first, so one document could be read as two
different packets by two parties. Duplicates are refused. Nesting is bounded (deeply nested input
made the parser raise RecursionError, a 500): the parser's own recursion guard refuses the
deepest, a walk of the parsed tree the rest; lone surrogates, which no UTF-8 store or log can
hold, are refused too.
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


#: A ``\\u`` escape in the surrogate range: only a document holding one can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _too_deep(value: Any, depth: int = 1) -> bool:
    """Whether ``value`` nests arrays and objects past :data:`MAX_DEPTH`: a walk over the parsed tree.

    The tree of a packet is small (its base64 body is one string), so walking it costs far less
    than scanning the text for brackets did (about 0.2 ms a submission); a document nested
    deeper than Python's recursion limit never gets here, the parser refuses it first.
    """
    if depth > MAX_DEPTH:
        return True
    if isinstance(value, dict):
        return any(isinstance(item, dict | list) and _too_deep(item, depth + 1) for item in value.values())
    if isinstance(value, list):
        return any(isinstance(item, dict | list) and _too_deep(item, depth + 1) for item in value)
    return False


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

    def no_constants(name: str) -> Any:
        raise InvalidRequest(f"The JSON body uses {name}, which is not JSON.")

    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constants)
    except ValueError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    except RecursionError:  # the C parser's own bound, checked before its stack could run out
        raise InvalidRequest(f"The JSON body is nested more than {MAX_DEPTH} levels deep.") from None
    if _too_deep(value):
        raise InvalidRequest(f"The JSON body is nested more than {MAX_DEPTH} levels deep.")
    # Bytes decoded as UTF-8 hold no surrogate themselves: only an escape can make one.
    if isinstance(raw, str) or _SURROGATE_ESCAPE.search(text):
        _check_text(value)
    return value
