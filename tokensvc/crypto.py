"""Secret hashing, constant-time comparison and at-rest encryption of API key secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_KEY_FILE = "secrets.key"
# Compared against when a credential's owner does not exist, so the timing says nothing.
_DUMMY_HASH = hashlib.sha256(b"tokensvc-dummy").hexdigest()


def new_secret() -> str:
    """A 32-character random secret (192 bits), URL-safe."""
    return secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret: a password hash would only slow valid callers."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time check of a presented secret against a stored hash (or a dummy one)."""
    ok = hmac.compare_digest(hash_secret(secret), stored_hash or _DUMMY_HASH)
    return ok and stored_hash is not None


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Create a file readable only by its owner (0600), atomically; never widen the mode.
    `exclusive`: raise FileExistsError rather than replace an existing file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # unlike rename, never replaces: the first of racing writers wins
    finally:
        os.unlink(tmp)


class SecretBox:
    """AES-256-GCM with a key kept in the keys directory; the associated data binds a ciphertext
    to its row, so a secret copied onto another key's row does not decrypt."""

    def __init__(self, key: bytes):
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for another use (HKDF-SHA256 of the box's key): one secret file to keep."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"tokensvc/" + purpose.encode()).derive(self._key)

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> SecretBox:
        keys_dir.mkdir(parents=True, exist_ok=True)
        path = keys_dir / SECRET_KEY_FILE
        if not path.exists():
            try:
                # Exclusive: workers or replicas starting together on a new keys dir must all end
                # up with the one key on disk, or secrets some of them stored could not be read.
                write_private_file(path, base64.b64encode(AESGCM.generate_key(bit_length=256)), exclusive=True)
            except FileExistsError:  # another process is creating it at the same moment
                pass
        raw = base64.b64decode(path.read_bytes().strip())
        if len(raw) != 32:
            raise ValueError(f"{path} does not hold a 256-bit key")
        return cls(raw)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return "v1:" + base64.urlsafe_b64encode(nonce + ct).decode()

    def check_value(self) -> str:
        """A value that tells this key from any other without revealing it (accounts.key_check)."""
        return hmac.new(self.derive("key-check"), b"tokensvc secrets.key", hashlib.sha256).hexdigest()

    def opens(self, token: str, context: str) -> bool:
        """Whether a stored ciphertext decrypts with this key (never raises)."""
        try:
            self.decrypt(token, context)
        except (InvalidTag, ValueError):
            return False
        return True

    def decrypt(self, token: str, context: str) -> str:
        if not token.startswith("v1:"):
            raise ValueError("unknown secret format")
        raw = base64.urlsafe_b64decode(token[3:])
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
