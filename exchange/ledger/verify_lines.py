"""What the verifier's single pass and its second core's worker both use to read entry lines fast.

Reading an export file in chunks of whole lines, the bounded byte search that reads an entry's
top-level ``seq`` without parsing it (with its proof), the cap on entries whose full check is
deferred, and the RFC 4648 pad-bit tables. :mod:`exchange.ledger.verify` (the single pass) and
:mod:`exchange.ledger.verify_split` (the worker) both import them; neither imports the other at
run time for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

#: How many bytes of whole lines the verifier reads at once: one call per some 2,700 lines instead of one
#: per line (a file's line iterator costs ~0.4 us a line, ``readlines`` ~0.15 us).
_CHUNK_BYTES = 2**20


def _file_chunks(read_lines: Callable[[int], list[bytes]]) -> Iterator[list[bytes]]:
    """A file's lines in chunks of about :data:`_CHUNK_BYTES`."""
    while chunk := read_lines(_CHUNK_BYTES):
        yield chunk


# --------------------------------------------------------------------------- the seq, cheaply
#
# By default an entry under a signed head is not parsed: only its top-level "seq" is read, by a
# bounded byte search from the end. ``"seq":`` can also occur in a nested object (under "actor",
# "details", ... which sort before "seq", or under any key sorting after it) or inside a key
# ending in a quote and "seq" (``"a\"seq":``), so the search accepts an occurrence only under
# conditions that make it the top-level member, and otherwise answers "not sure" (the caller then
# parses the entry in full).
#
# Claim: if ``entry`` is any valid JSON text (canonical or not) and ``_seq_is(entry, digits)`` is
# true, then the entry is an object whose top-level "seq" is the integer written ``digits`` (the
# last "seq" member if the key is repeated, as json.loads reads it). Proof, with ``at`` the last
# occurrence of the six bytes ``"seq":`` and ``stop`` the end of ``digits`` and "," after it:
#
# 1. The byte before ``at`` is "{" or ",", so the quote at ``at`` is not inside a string (a quote
#    inside a JSON string is always written escaped, right after a backslash), and as a quote
#    outside a string followed by "s" it cannot close a string: it opens one. That string's
#    content is ``seq`` (the next quote follows "q", not a backslash, so it closes it), and the
#    ":" after it makes it a member name: ``at`` starts a member "seq" of some object O.
# 2. The value is ``digits`` (``%d`` of a non-negative int: no sign, no leading zero) followed by
#    ",", which cannot continue a JSON number: the value is that integer (not 5.0, 5e0, 50 or 05).
# 3. The first "}" at or after ``stop`` is the text's last byte (the search starts at ``at``: the
#    bytes from ``at`` to ``stop`` are ``"seq":``, digits and "," and hold no "}"). A valid JSON
#    text ending in "}" is an object T closed by that byte. O's own closing "}" lies after ``stop``; were O nested in
#    T, T's closing "}" would be a second, later one. So O is T: "seq" is a top-level member.
# 4. It is the last top-level "seq" member: ``at`` is the last occurrence of the bytes at all.
#
# Nothing is claimed for bytes that are not JSON: under a head the server's signature covers them
# (see the module documentation), and in the unsigned tail or with ``strict`` the full check runs.
# Real entries keep only "time" and "type", two short strings, after "seq", so the search scans
# a few dozen bytes and succeeds; a "}" inside those strings, a nested object after "seq" or "seq"
# as the last key merely sends the entry to the full check.

_SEQ_KEY = b'"seq":'
#: The member the search expects at ``at``, key, value and comma: one ``%`` and one ``startswith``
#: (~50 ns an entry less than formatting the digits and adding the key's length to ``at``).
_SEQ_MEMBER = b'"seq":%d,'
_BEFORE_KEY = b"{,"
#: Deferred entries held before a head covers them, in bytes (with a per-entry allowance for the
#: bookkeeping); past this they are checked in full at once.
_DEFERRED_BYTES = 8 * 2**20
_DEFERRED_OVERHEAD = 128


def _seq_is(entry: bytes, seq: int) -> bool:
    """True only if ``entry`` (when valid JSON) is an object whose top-level ``seq`` is ``seq``.

    False means "mismatch or not sure": parse the entry in full. See the proof above; the verifier's
    hot loop and the worker's loop (:func:`exchange.ledger.verify_split._summarise`) carry inline
    copies.
    """
    at = entry.rfind(_SEQ_KEY)
    return (
        at > 0
        and entry[at - 1] in _BEFORE_KEY
        and entry.startswith(_SEQ_MEMBER % seq, at)
        and entry.find(b"}", at) == len(entry) - 1
    )


# RFC 4648 section 3.5: the bits that pad the last base64 character must be zero. Decoders ignore
# them, so without this check one entry's bytes would have several spellings on its line; with it,
# the line's text and the entry's bytes determine each other. These tables give, per character,
# the bits that must be zero before "=" (1) or "==" (2).
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_PAD_BITS_1 = bytes(_ALPHABET.index(c) & 0x03 if c in _ALPHABET else 0 for c in range(256))
_PAD_BITS_2 = bytes(_ALPHABET.index(c) & 0x0F if c in _ALPHABET else 0 for c in range(256))
