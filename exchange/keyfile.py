"""A member's key file: their private signing and encryption keys, kept on their own machine.

JSON, mode 0600, never sent anywhere. The server only ever receives the public halves.

The file also keeps every key the member held before a rotation (``previous``): a packet is sealed
to the encryption key that was current when it was sent, and only that private key opens it, so
dropping a retired key would lock its packets away for good. A file without ``previous`` (written
before there was one) loads with an empty history; a reader that predates it ignores the list and
still finds the current keys, so the format keeps its name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from exchange import crypto, statements
from exchange.domain import iso, parse_iso
from exchange.errors import CryptoError, KeyFileError

FORMAT = "safeguarding-exchange/member-keys/v1"
ENROLMENT_FORMAT = "safeguarding-exchange/enrolment/v1"

_Key = TypeVar("_Key", crypto.SigningKey, crypto.EncryptionKey)


@dataclass(frozen=True)
class RetiredKey(Generic[_Key]):
    """A private key this member used until ``retired``, kept so what was sealed to it still opens."""

    key: _Key
    retired: datetime


@dataclass(frozen=True)
class MemberCredentials:
    """Who I am on the exchange, where it is, and my private keys."""

    member_id: str | None
    agency_id: str | None
    server: str | None
    signing: crypto.SigningKey
    encryption: crypto.EncryptionKey
    display_name: str = ""
    #: Keys retired by rotations, oldest first. Never pruned: see the module docstring.
    previous_signing: tuple[RetiredKey[crypto.SigningKey], ...] = ()
    previous_encryption: tuple[RetiredKey[crypto.EncryptionKey], ...] = ()

    @classmethod
    def generate(cls) -> MemberCredentials:
        return cls(None, None, None, crypto.SigningKey.generate(), crypto.EncryptionKey.generate())

    def registered(self, member_id: str, agency_id: str, server: str | None, display_name: str) -> MemberCredentials:
        return replace(self, member_id=member_id, agency_id=agency_id, server=server, display_name=display_name)

    def rotated(
        self, signing: crypto.SigningKey, encryption: crypto.EncryptionKey, *, retired: datetime
    ) -> MemberCredentials:
        """These credentials with new current keys; the keys they replace join the history, retired at ``retired``."""
        return replace(
            self,
            signing=signing,
            encryption=encryption,
            previous_signing=(*self.previous_signing, RetiredKey(self.signing, retired)),
            previous_encryption=(*self.previous_encryption, RetiredKey(self.encryption, retired)),
        )

    def encryption_key_for(self, key_id: str) -> crypto.EncryptionKey | None:
        """The private encryption key, current or retired, whose id is ``key_id``; ``None`` if this file has none."""
        held = (self.encryption, *(r.key for r in reversed(self.previous_encryption)))
        return next((key for key in held if key.key_id == key_id), None)

    def save(self, path: Path) -> None:
        """Write the key file (mode 0600), replacing any file at ``path`` all at once."""
        retired: list[tuple[datetime, str, crypto.SigningKey | crypto.EncryptionKey]] = [
            *((r.retired, "signing", r.key) for r in self.previous_signing),
            *((r.retired, "encryption", r.key) for r in self.previous_encryption),
        ]
        # One list in the order the keys were retired; the stable sort keeps each rotation's pair together.
        retired.sort(key=lambda item: item[0])
        previous = [
            {"use": use, "key_id": key.key_id, "private": crypto.b64encode(key.private_bytes()), "retired": iso(when)}
            for when, use, key in retired
        ]
        document = {
            "format": FORMAT,
            "member": self.member_id,
            "agency": self.agency_id,
            "server": self.server,
            "display_name": self.display_name,
            "signing": {
                "key_id": self.signing.key_id,
                "private": crypto.b64encode(self.signing.private_bytes()),
            },
            "encryption": {
                "key_id": self.encryption.key_id,
                "private": crypto.b64encode(self.encryption.private_bytes()),
            },
            "previous": previous,
        }
        # Replaced, not deleted and rewritten: a crash half way through a rotation must not lose a key.
        crypto.replace_private_file(path, (json.dumps(document, indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> MemberCredentials:
        """Read a key file, with or without a history; raise :class:`KeyFileError` if any key in it is unusable."""
        try:
            document = json.loads(crypto.read_private_file(path))
        except ValueError:
            raise KeyFileError(f"The key file {path} is not valid JSON.") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise KeyFileError(f"The key file {path} is not a member key file ({FORMAT}).")
        try:
            signing = crypto.SigningKey.from_bytes(crypto.b64decode(document["signing"]["private"]))
            encryption = crypto.EncryptionKey.from_bytes(crypto.b64decode(document["encryption"]["private"]))
        except (KeyError, TypeError, CryptoError):
            raise KeyFileError(f"The key file {path} does not hold usable keys.") from None
        previous_signing: list[RetiredKey[crypto.SigningKey]] = []
        previous_encryption: list[RetiredKey[crypto.EncryptionKey]] = []
        try:
            for entry in _entries(document.get("previous", [])):
                if entry["use"] == "signing":
                    previous_signing.append(_retired(entry, crypto.SigningKey.from_bytes))
                elif entry["use"] == "encryption":
                    previous_encryption.append(_retired(entry, crypto.EncryptionKey.from_bytes))
                else:
                    raise ValueError("an earlier key has an unknown use")
        except (KeyError, TypeError, ValueError, CryptoError):
            raise KeyFileError(f"The key file {path} holds an earlier key that is not usable.") from None
        return cls(
            document.get("member"),
            document.get("agency"),
            document.get("server"),
            signing,
            encryption,
            document.get("display_name") or "",
            tuple(previous_signing),
            tuple(previous_encryption),
        )

    def public_document(self) -> dict[str, dict[str, str]]:
        """The public halves, as a member registration carries them."""
        return {
            "signing_key": {"public": crypto.b64encode(self.signing.public_bytes)},
            "encryption_key": {"public": crypto.b64encode(self.encryption.public_bytes)},
        }

    def enrolment(self) -> dict[str, Any]:
        """The enrolment file a new member hands their admin: public keys and the member's own proof.

        Public only (nothing in it is secret): the proof is the signing key's signature over both key
        ids, so an admin can register exactly these keys and no others for this person.
        """
        statement = statements.enrolment_statement(self.signing.key_id, self.encryption.key_id)
        return {
            "format": ENROLMENT_FORMAT,
            "signing_key_id": self.signing.key_id,
            "encryption_key_id": self.encryption.key_id,
            **self.public_document(),
            "proof": crypto.b64encode(self.signing.sign(statement)),
        }


def load_enrolment(path: Path) -> dict[str, Any]:
    """Read an enrolment file (``exchange keys new`` writes one); :class:`KeyFileError` if it is not one.

    The proof is checked by the server; here only the shape, so a wrong file is named plainly.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise KeyFileError(f"{path} is not a readable enrolment file.") from None
    if not isinstance(document, dict) or document.get("format") != ENROLMENT_FORMAT:
        raise KeyFileError(f"{path} is not an enrolment file ({ENROLMENT_FORMAT}).")
    try:
        return {
            "signing_key": {"public": str(document["signing_key"]["public"])},
            "encryption_key": {"public": str(document["encryption_key"]["public"])},
            "proof": str(document["proof"]),
        }
    except (KeyError, TypeError):
        raise KeyFileError(f"The enrolment file {path} lacks its keys or proof.") from None


def is_key_file(path: Path) -> bool:
    """Whether ``path`` holds a member key file (rather than, say, an enrolment file)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def _entries(previous: Any) -> list[Mapping[str, Any]]:
    """The ``previous`` list, each entry an object; ``TypeError`` otherwise."""
    if not isinstance(previous, list) or not all(isinstance(entry, Mapping) for entry in previous):
        raise TypeError("previous is not a list of objects")
    return previous


def _retired(entry: Mapping[str, Any], from_bytes: Callable[[bytes], _Key]) -> RetiredKey[_Key]:
    """One ``previous`` entry as a key; raises if it is damaged or is not the key its id names."""
    key = from_bytes(crypto.b64decode(entry["private"], what="earlier private key"))
    # Key ids are fingerprints: a mismatch means the entry was damaged or pieced together wrongly.
    if entry["key_id"] != key.key_id:
        raise ValueError("an earlier key is not the key its id names")
    if not isinstance(entry["retired"], str):
        raise TypeError("an earlier key's retirement time is not text")
    return RetiredKey(key, parse_iso(entry["retired"]))
