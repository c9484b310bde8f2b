"""All of the exchange's cryptography, and the only importer of ``cryptography.hazmat``.

The small API here is meant to be hard to misuse:

* :func:`canonical_json` — RFC 8785 (JCS) bytes, the only form that is ever signed or hashed.
* :class:`SigningKey` / :func:`verify_signature` — Ed25519 (RFC 8032).
* :class:`EncryptionKey` / :func:`seal_to` — HPKE (RFC 9180) base mode as implemented natively by
  ``cryptography`` >= 50, suite ML-KEM-768+X25519 / HKDF-SHA256 / AES-256-GCM by default.
* :func:`seal_packet` / :func:`open_packet` — a packet body encrypted once under a fresh content
  key (AES-256-GCM) whose key is sealed to each recipient, with the manifest bound into every layer.

Every library failure is re-raised as :class:`exchange.errors.CryptoError` with a plain sentence;
no key material ever appears in an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange.errors import CryptoError, KeyFileError

#: The HPKE suite sealed content keys use by default (RFC 9180 + draft-ietf-hpke-pq hybrid KEM).
DEFAULT_SUITE = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
BODY_CIPHER = "AES-256-GCM"

_SUITES: dict[str, hpke.Suite] = {
    DEFAULT_SUITE: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}

_MLKEM768_SEED = 64
_MLKEM768_PUBLIC = 1184
_X25519 = 32
_ED25519 = 32
_NONCE = 12
_CONTENT_KEY = 32

# Domain-separation labels: a signature or seal made for one purpose can never be replayed as another.
_HPKE_INFO_LABEL = b"safeguarding-exchange/v1/content-key\x00"
_BODY_AAD_LABEL = b"safeguarding-exchange/v1/body\x00"


# --------------------------------------------------------------------------- encodings


#: RFC 8785's integers: those an IEEE 754 double holds exactly (I-JSON, RFC 7493 section 2.2).
_I_JSON_INT = 2**53 - 1


def _written_alike(value: Any) -> bool:
    """Whether the standard library's sorted, compact ``json.dumps`` writes ``value`` as RFC 8785 does,
    provided its text has no character at or above U+D800 (checked on the text by the caller).

    It does for null, booleans, strings (both escape exactly ``"``, ``\\`` and the C0 controls, with
    the same short forms and lowercase ``\\u00xx``, and write everything else as UTF-8), integers
    in the I-JSON range, and arrays and objects of those with string keys. Below U+D800, sorting
    keys by code point and by UTF-16 code unit (RFC 8785 section 3.2.3) agree. Floats
    (ECMAScript's number form) and anything else are left to ``rfc8785``.
    """
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            if type(item) is not str and not _written_alike(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(item) is str or _written_alike(item) for item in value)
    if kind is int:
        return bool(-_I_JSON_INT <= value <= _I_JSON_INT)
    return kind is str or kind is bool or value is None


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical JSON bytes of ``value``.

    The documents the exchange signs take the standard library's C encoder (about 5x faster than
    ``rfc8785``'s pure Python, the same bytes: see :func:`_written_alike`, and the property test
    against ``rfc8785`` in tests/test_crypto.py); any other value goes through ``rfc8785``.

    Raises :class:`CryptoError` if the value cannot be canonicalised (e.g. a float that is
    not finite, or an integer beyond the I-JSON range).
    """
    if _written_alike(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        # Past U+D800 the key order may differ and a lone surrogate must be refused: rfc8785 decides.
        if text.isascii() or max(text) < "\ud800":
            return text.encode("utf-8")
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CryptoError(f"The document cannot be put in canonical JSON form: {exc}") from None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def digest_text(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``: how digests appear in manifests, receipts and the ledger."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def subject_pseudonym(identifier: str, linkage_key: bytes) -> str:
    """Keyed pseudonym of a subject identifier (e.g. an NHS number): HMAC-SHA256, hex.

    The identifier is normalised (spaces, hyphens and case removed) so the same child gets the
    same pseudonym from every agency holding the deployment's linkage key; the server, which
    does not hold the key, cannot reverse it or test guesses against it.
    """
    if len(linkage_key) < 32:
        raise CryptoError("The linkage key must be at least 32 bytes.")
    normalised = "".join(ch for ch in identifier.upper() if ch.isalnum())
    if not normalised:
        raise CryptoError("The subject identifier is empty once normalised.")
    return hmac.new(linkage_key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, *, what: str = "value") -> bytes:
    """Decode standard base64 strictly; raise :class:`CryptoError` naming ``what`` otherwise.

    Strictly means the one canonical spelling (RFC 4648 section 3.5): decoders ignore the bits that
    pad the last character, so without the round trip one value would have several spellings and a
    change to a signed or exported text could pass unnoticed.
    """
    try:
        raw = text.encode("ascii")
        data = base64.b64decode(raw, validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError):
        raise CryptoError(f"The {what} is not valid base64.") from None
    if base64.b64encode(data) != raw:
        raise CryptoError(f"The {what} is not in canonical base64 (its padding bits are not zero).")
    return data


def key_id_for(algorithm: str, public_bytes: bytes) -> str:
    """A key's id is its fingerprint: the algorithm and the first 128 bits of SHA-256 of its public key."""
    return f"{algorithm}:{hashlib.sha256(public_bytes).hexdigest()[:32]}"


# --------------------------------------------------------------------------- signing keys

SIGNING_ALGORITHM = "ed25519"
ENCRYPTION_ALGORITHM = "mlkem768x25519"


class SigningKey:
    """An Ed25519 private key. ``repr`` never shows the key."""

    __slots__ = ("_key", "key_id", "public_bytes")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_bytes = key.public_key().public_bytes_raw()
        self.key_id = key_id_for(SIGNING_ALGORITHM, self.public_bytes)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningKey:
        if len(raw) != _ED25519:
            raise CryptoError("An Ed25519 private key must be 32 bytes.")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def http_signing_key(self) -> Any:
        """The key object the RFC 9421 library expects; only the auth layers call this."""
        return self._key

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"


def verify_signature(public_bytes: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; return None, or raise :class:`CryptoError`."""
    if len(public_bytes) != _ED25519:
        raise CryptoError("The signing public key is not a 32-byte Ed25519 key.")
    try:
        Ed25519PublicKey.from_public_bytes(public_bytes).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise CryptoError("The signature does not verify.") from None


def http_verification_key(public_bytes: bytes) -> Any:
    """The verification key object the RFC 9421 library expects."""
    if len(public_bytes) != _ED25519:
        raise CryptoError("The signing public key is not a 32-byte Ed25519 key.")
    return Ed25519PublicKey.from_public_bytes(public_bytes)


def check_signing_public_key(public_bytes: bytes) -> str:
    """Validate an Ed25519 public key and return its key id."""
    http_verification_key(public_bytes)
    return key_id_for(SIGNING_ALGORITHM, public_bytes)


# --------------------------------------------------------------------------- encryption keys


class EncryptionKey:
    """A member's HPKE private key (ML-KEM-768 seed and X25519 key). ``repr`` never shows it."""

    __slots__ = ("_mlkem", "_x25519", "key_id", "public_bytes")

    def __init__(self, mlkem_key: mlkem.MLKEM768PrivateKey, x_key: x25519.X25519PrivateKey) -> None:
        self._mlkem = mlkem_key
        self._x25519 = x_key
        self.public_bytes = mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()
        self.key_id = key_id_for(ENCRYPTION_ALGORITHM, self.public_bytes)

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> EncryptionKey:
        if len(raw) != _MLKEM768_SEED + _X25519:
            raise CryptoError("An encryption private key must be 96 bytes (ML-KEM-768 seed and X25519 key).")
        try:
            return cls(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM768_SEED]),
                x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM768_SEED:]),
            )
        except ValueError:
            raise CryptoError("The encryption private key is not usable.") from None

    def private_bytes(self) -> bytes:
        return self._mlkem.private_bytes_raw() + self._x25519.private_bytes_raw()

    def _hpke_key(self) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x25519)

    def __repr__(self) -> str:
        return f"EncryptionKey({self.key_id})"


def _hpke_public(public_bytes: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(public_bytes) != _MLKEM768_PUBLIC + _X25519:
        raise CryptoError("The encryption public key is not an ML-KEM-768+X25519 key (1216 bytes).")
    try:
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public_bytes[:_MLKEM768_PUBLIC]),
            x25519.X25519PublicKey.from_public_bytes(public_bytes[_MLKEM768_PUBLIC:]),
        )
    except ValueError:
        raise CryptoError("The encryption public key is not usable.") from None


def check_encryption_public_key(public_bytes: bytes) -> str:
    """Validate an HPKE public key and return its key id."""
    _hpke_public(public_bytes)
    return key_id_for(ENCRYPTION_ALGORITHM, public_bytes)


def _suite(name: str) -> hpke.Suite:
    suite = _SUITES.get(name)
    if suite is None:
        raise CryptoError(f"The HPKE suite {name!r} is not supported.")
    return suite


def seal_to(public_bytes: bytes, plaintext: bytes, info: bytes, suite: str = DEFAULT_SUITE) -> bytes:
    """HPKE base-mode single-shot seal (RFC 9180 section 6.1): ``enc || ciphertext``."""
    return _suite(suite).encrypt(plaintext, _hpke_public(public_bytes), info=info)


def open_sealed(key: EncryptionKey, sealed: bytes, info: bytes, suite: str = DEFAULT_SUITE) -> bytes:
    """Open what :func:`seal_to` sealed; raise :class:`CryptoError` if anything was changed."""
    try:
        return _suite(suite).decrypt(sealed, key._hpke_key(), info=info)
    except (InvalidTag, ValueError):
        raise CryptoError("The sealed content key cannot be opened with this key.") from None


# --------------------------------------------------------------------------- sealed notes

_NOTE_INFO_LABEL = b"safeguarding-exchange/note/v1\x00"


def _note_info(context: str, member: str, key_id: str) -> bytes:
    return _NOTE_INFO_LABEL + canonical_json({"context": context, "member": member, "encryption_key": key_id})


def seal_note(note: Mapping[str, Any], member: str, key_id: str, public_bytes: bytes, *, context: str) -> bytes:
    """HPKE-seal a small JSON note (an action report's narrative, a decline's reasons) to one member.

    ``context`` names what the note belongs to (e.g. ``report:pkt_...``); it and the member's key
    are bound into the HPKE ``info``, so a note cannot be moved onto another statement or reader.
    The signed statement carrying a note names its digest (:func:`digest_text` of the bytes returned).
    """
    return seal_to(public_bytes, canonical_json(dict(note)), _note_info(context, member, key_id))


def open_note(key: EncryptionKey, sealed: bytes, member: str, key_id: str, *, context: str) -> dict[str, Any]:
    """Open a note sealed by :func:`seal_note`; :class:`CryptoError` if it was changed or moved."""
    try:
        plain = open_sealed(key, sealed, _note_info(context, member, key_id))
    except CryptoError:
        raise CryptoError("The sealed note cannot be opened with this key (changed, moved or not yours).") from None
    try:
        note = json.loads(plain)
    except ValueError:
        raise CryptoError("The sealed note is not a JSON object.") from None
    if not isinstance(note, dict):
        raise CryptoError("The sealed note is not a JSON object.")
    return note


# --------------------------------------------------------------------------- packets


def binding_digest(manifest: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical manifest without its ``content`` section.

    The ``content`` section holds the digests of the ciphertexts, which cannot exist before
    encryption; everything else in the manifest (packet id, sender, recipients, purpose, basis,
    fields...) is bound into the body's AEAD associated data and every HPKE ``info``, so a
    manifest cannot be moved onto another body or another recipient's key. The sender's
    signature then covers the whole manifest, ``content`` included.
    """
    return sha256(canonical_json({k: v for k, v in manifest.items() if k != "content"}))


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the whole canonical manifest: what receipts and approvals sign."""
    return digest_text(canonical_json(manifest))


def _hpke_info(binding: bytes, member: str, key_id: str) -> bytes:
    return _HPKE_INFO_LABEL + binding + canonical_json({"member": member, "encryption_key": key_id})


def _body_aad(binding: bytes) -> bytes:
    return _BODY_AAD_LABEL + binding


@dataclass(frozen=True)
class Recipient:
    """Who a packet is sealed to: a member and one of their current encryption keys."""

    member: str
    agency: str
    key_id: str
    public_bytes: bytes


@dataclass(frozen=True)
class SealedPacket:
    """What a sender submits: the signed manifest, one ciphertext and a sealed key per recipient."""

    manifest: dict[str, Any]
    signature: bytes
    body: bytes
    sealed_keys: dict[str, bytes]
    manifest_digest: str


def seal_packet(
    manifest: Mapping[str, Any],
    body: Mapping[str, Any],
    recipients: Sequence[Recipient],
    sender_key: SigningKey,
    *,
    suite: str = DEFAULT_SUITE,
    max_recipients: int = 25,
) -> SealedPacket:
    """Encrypt ``body`` once, seal its key to each recipient, fill in ``content`` and sign.

    ``manifest`` must not yet have a ``content`` section; its ``recipients`` must list exactly
    ``recipients`` in the same order.
    """
    if "content" in manifest:
        raise CryptoError("The manifest already has a content section; build a fresh one.")
    if not recipients:
        raise CryptoError("A packet needs at least one recipient.")
    if len(recipients) > max_recipients:
        raise CryptoError(f"A packet may be sealed to at most {max_recipients} recipients.")
    listed = [(r.get("member"), r.get("encryption_key")) for r in manifest.get("recipients", [])]
    if listed != [(r.member, r.key_id) for r in recipients]:
        raise CryptoError("The manifest's recipients do not match the keys the packet is sealed to.")
    binding = binding_digest(manifest)
    content_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_NONCE)
    ciphertext = nonce + AESGCM(content_key).encrypt(nonce, canonical_json(body), _body_aad(binding))
    sealed = {
        r.member: seal_to(r.public_bytes, content_key, _hpke_info(binding, r.member, r.key_id), suite)
        for r in recipients
    }
    full = dict(manifest)
    full["content"] = {
        "cipher": BODY_CIPHER,
        "hpke_suite": suite,
        "body_digest": digest_text(ciphertext),
        "body_size": len(ciphertext),
        "sealed_keys": [
            {"member": r.member, "encryption_key": r.key_id, "digest": digest_text(sealed[r.member])}
            for r in recipients
        ],
    }
    signature = sender_key.sign(canonical_json(full))
    return SealedPacket(full, signature, ciphertext, sealed, manifest_digest(full))


def verify_manifest_signature(
    manifest: Mapping[str, Any], signature: bytes, sender_public: bytes, *, canonical: bytes | None = None
) -> None:
    """Check the sender's Ed25519 signature over the canonical manifest (``canonical``: its bytes, if made already)."""
    try:
        verify_signature(sender_public, canonical if canonical is not None else canonical_json(manifest), signature)
    except CryptoError:
        raise CryptoError("The sender's signature over the manifest does not verify.") from None


def check_content_digests(manifest: Mapping[str, Any], body: bytes, sealed_keys: Mapping[str, bytes]) -> None:
    """Check the body and each sealed key against the digests the manifest carries.

    Used by the server on submission (so a packet cannot be delivered with mismatched parts)
    and by recipients before opening.
    """
    content = manifest.get("content")
    if not isinstance(content, Mapping):
        raise CryptoError("The manifest has no content section.")
    if content.get("body_digest") != digest_text(body) or content.get("body_size") != len(body):
        raise CryptoError("The body does not match the digest in the manifest.")
    listed = {s.get("member"): s.get("digest") for s in content.get("sealed_keys", [])}
    for member, sealed in sealed_keys.items():
        if listed.get(member) != digest_text(sealed):
            raise CryptoError("A sealed content key does not match the digest in the manifest.")


def open_packet(
    manifest: Mapping[str, Any],
    signature: bytes,
    sender_public: bytes,
    body: bytes,
    sealed_key: bytes,
    member: str,
    key: EncryptionKey,
) -> dict[str, Any]:
    """Verify and decrypt a packet for ``member``; return the body and check it against the manifest.

    Checks, in order: that ``sender_public`` is the key the manifest names (its fingerprint); the
    sender's signature over the manifest; the body's and this member's
    sealed key's digests; the seal (bound to this manifest, member and key); the body's AEAD tag
    (bound to this manifest); and that the body's fields are exactly the manifest's fields with
    the same labels. Any failure raises :class:`CryptoError` saying which check failed.
    """
    sender = manifest.get("sender")
    named_key = sender.get("signing_key") if isinstance(sender, Mapping) else None
    if named_key != key_id_for(SIGNING_ALGORITHM, sender_public):
        # Key ids are fingerprints: the key used to verify must be the one the manifest names.
        raise CryptoError("The sender's key does not match the key id the manifest names.")
    verify_manifest_signature(manifest, signature, sender_public)
    check_content_digests(manifest, body, {member: sealed_key})
    content = manifest["content"]
    mine = [s for s in content.get("sealed_keys", []) if s.get("member") == member]
    if not mine:
        raise CryptoError("This packet is not addressed to you.")
    if mine[0].get("encryption_key") != key.key_id:
        raise CryptoError("This packet was sealed to a different encryption key of yours.")
    binding = binding_digest(manifest)
    content_key = open_sealed(key, sealed_key, _hpke_info(binding, member, key.key_id), content["hpke_suite"])
    if len(content_key) != _CONTENT_KEY or len(body) < _NONCE + 16:
        raise CryptoError("The packet's content key or body has the wrong length.")
    try:
        plaintext = AESGCM(content_key).decrypt(body[:_NONCE], body[_NONCE:], _body_aad(binding))
    except InvalidTag:
        raise CryptoError("The body does not decrypt under this manifest: it was changed or moved.") from None
    try:
        opened = json.loads(plaintext)
    except ValueError:
        raise CryptoError("The decrypted body is not JSON.") from None
    if not isinstance(opened, dict):
        raise CryptoError("The decrypted body is not a JSON object.")
    check_body_matches_manifest(manifest, opened)
    return opened


def field_labels(field: Mapping[str, Any]) -> dict[str, Any]:
    """A body field's labels as the manifest states them: everything but the value itself."""
    return {k: v for k, v in field.items() if k not in ("value",)}


def check_body_matches_manifest(manifest: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    """The body's packet id, field names and labels must be exactly the manifest's."""
    if body.get("packet_id") != manifest.get("packet_id"):
        raise CryptoError("The body belongs to a different packet.")
    fields = body.get("fields")
    if not isinstance(fields, list):
        raise CryptoError("The body has no field list.")
    stated = [dict(f) for f in manifest.get("fields", [])]
    carried = [field_labels(f) for f in fields if isinstance(f, Mapping)]
    for f in carried:
        attachment = f.get("attachment")
        if isinstance(attachment, Mapping):
            # The body carries the bytes; the manifest carries only their digest and size.
            f["attachment"] = {k: v for k, v in attachment.items() if k != "data"}
    if carried != stated:
        raise CryptoError("The body's fields or their labels differ from the manifest's field list.")
    for f in fields:
        attachment = f.get("attachment") if isinstance(f, Mapping) else None
        if isinstance(attachment, Mapping) and "data" in attachment:
            data = b64decode(str(attachment["data"]), what="attachment")
            if digest_text(data) != attachment.get("digest") or len(data) != attachment.get("size"):
                raise CryptoError(f"The attachment in field {f.get('name')!r} does not match its digest.")


# --------------------------------------------------------------------------- key files


def write_private_file(path: Path, data: bytes) -> None:
    """Write secret material readable by the owner only (mode 0600), never overwriting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def replace_private_file(path: Path, data: bytes) -> None:
    """Write secret material (mode 0600) in place of ``path``, all or nothing.

    The bytes go to a new 0600 file beside ``path``, are flushed to disk, and that file is renamed
    over ``path`` (``rename`` is atomic within a directory, POSIX): a crash or a full disk leaves
    either the old file or the new one whole, never half of one and never neither.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)  # mode 0600
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    # The rename itself is durable only once the directory is on disk too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_private_file(path: Path) -> bytes:
    """Read secret material, refusing a file that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"The key file {path} does not exist.") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"The key file {path} is readable by others; run: chmod 600 {path}")
    return path.read_bytes()


def save_server_key(path: Path, key: SigningKey) -> None:
    pem = key._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem)


def load_server_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(read_private_file(path), password=None)
    except ValueError:
        raise KeyFileError(f"The server key file {path} is not a PEM private key.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"The server key file {path} does not hold an Ed25519 key.")
    return SigningKey(key)


def private_folder(path: Path) -> None:
    """Create ``path`` (and parents) if needed, and make it 0700: the store and the record live there."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def create_private(path: Path) -> None:
    """Make sure ``path`` exists with mode 0600, creating it empty if it does not (never truncating)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)
