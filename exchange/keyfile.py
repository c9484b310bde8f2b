"""A member's key file: their private signing and encryption keys, kept on their own machine.

JSON, mode 0600, never sent anywhere. The server only ever receives the public halves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from exchange import crypto
from exchange.errors import CryptoError, KeyFileError

FORMAT = "safeguarding-exchange/member-keys/v1"


@dataclass(frozen=True)
class MemberCredentials:
    """Who I am on the exchange, where it is, and my private keys."""

    member_id: str | None
    agency_id: str | None
    server: str | None
    signing: crypto.SigningKey
    encryption: crypto.EncryptionKey
    display_name: str = ""

    @classmethod
    def generate(cls) -> MemberCredentials:
        return cls(None, None, None, crypto.SigningKey.generate(), crypto.EncryptionKey.generate())

    def registered(self, member_id: str, agency_id: str, server: str | None, display_name: str) -> MemberCredentials:
        return MemberCredentials(member_id, agency_id, server, self.signing, self.encryption, display_name)

    def save(self, path: Path) -> None:
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
        }
        if path.exists():
            path.unlink()
        crypto.write_private_file(path, (json.dumps(document, indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> MemberCredentials:
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
        return cls(
            document.get("member"),
            document.get("agency"),
            document.get("server"),
            signing,
            encryption,
            document.get("display_name") or "",
        )

    def public_document(self) -> dict[str, dict[str, str]]:
        """The public halves, as a member registration carries them."""
        return {
            "signing_key": {"public": crypto.b64encode(self.signing.public_bytes)},
            "encryption_key": {"public": crypto.b64encode(self.encryption.public_bytes)},
        }
