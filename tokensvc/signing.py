"""The keyring: ES256 signing keys as PEM files in the keys directory.

Each key's `kid` is its RFC 7638 thumbprint. `keyring.json` says which key signs (`active`), when
each other key stopped signing (`deactivated`) and which are `retired` (no longer verify, no longer
published). Keys are parsed once per change of the directory: a running server notices
`tokensvc keys activate` by the directory's modification stamp (checked at most once a second) or
at once on SIGHUP.

A `*.pem` file that is not a P-256 private key is skipped with one warning naming it, so one bad
file neither stops a restart nor blocks rotation; a directory with no usable key is an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .crypto import write_private_file
from .lifetimes import acceptable_for

STATE_FILE = "keyring.json"
# The order n of P-256. ECDSA signatures (r, s) and (r, n - s) both verify: tokensvc signs and
# accepts only s <= n/2, so a token has one signature (as Bitcoin's BIP 62 and libsecp256k1).
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
HALF_ORDER = ORDER // 2

log = logging.getLogger("tokensvc.keys")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big"))}


def thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace."""
    canonical = json.dumps(public_jwk(public), sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    public: ec.EllipticCurvePublicKey
    created: int
    header_b64: str = ""

    def __post_init__(self) -> None:
        header = {"alg": "ES256", "typ": "JWT", "cty": "twilio-fpa;v=1", "kid": self.kid}
        self.header_b64 = b64url(json.dumps(header, separators=(",", ":")).encode())

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS of the claims (header precomputed; raw r||s signature per RFC 7518)."""
        signing_input = f"{self.header_b64}.{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        der = self.private.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        if s > HALF_ORDER:
            s = ORDER - s
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


FileStamp = tuple[int, ...]


def _file_stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class Skipped:
    """A `*.pem` file that holds no usable signing key, as it was when it was read."""

    path: Path
    reason: str  # fixed wording: never the parser's message, which might quote the file
    stamp: FileStamp


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the keyring; swapped whole on reload, so readers need no lock."""

    keys: dict[str, SigningKey]
    active: SigningKey
    retired: frozenset[str]
    deactivated: dict[str, int] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()
    # Tokens issued before this moment may carry a high-S signature (versions before low-S
    # signing); 0: none may (a keyring that always signed low-S).
    high_s_before: int = 0

    def verification_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        key = self.keys.get(kid)
        if key is None or kid in self.retired:
            return None
        return key.public

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(public_jwk(k.public), kid=k.kid, use="sig", alg="ES256")
                         for kid, k in sorted(self.keys.items()) if kid not in self.retired]}


class KeyringError(RuntimeError):
    def __init__(self, message: str, *, skipped: tuple[Skipped, ...] = ()):
        super().__init__(message)
        self.skipped = skipped  # the files passed over on the way, when there were any


def _read_state(keys_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((keys_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise KeyringError(f"{keys_dir / STATE_FILE} is unreadable: {exc}") from exc
    return state if isinstance(state, dict) else {}


def _write_state(keys_dir: Path, state: dict[str, Any]) -> None:
    write_private_file(keys_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True).encode())


def _load_keys(keys_dir: Path) -> tuple[dict[str, SigningKey], tuple[Skipped, ...]]:
    keys: dict[str, SigningKey] = {}
    skipped: list[Skipped] = []
    for path in sorted(keys_dir.glob("*.pem")):
        stamp = _file_stamp(path)  # before reading: a file rewritten meanwhile is read again later
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError, UnsupportedAlgorithm):
            skipped.append(Skipped(path, "not a readable, unencrypted PEM private key", stamp))
            continue
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            skipped.append(Skipped(path, "not a P-256 (ES256) private key", stamp))
            continue
        public = private.public_key()
        kid = thumbprint(public)
        keys[kid] = SigningKey(kid, private, public, stamp[0] // 10**9 if stamp else int(time.time()))
    return keys, tuple(skipped)


def _describe(skipped: tuple[Skipped, ...]) -> str:
    return "; ".join(f"skipped {s.path.name}: {s.reason}" for s in skipped)


def generate_key(keys_dir: Path) -> str:
    """Write a new P-256 key (0600) and return its kid; it does not sign until activated."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    kid = thumbprint(private.public_key())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_private_file(keys_dir / f"{kid}.pem", pem)
    return kid


LOW_S_SINCE = "low_s_since"


def ensure_keys(keys_dir: Path) -> None:
    """Generate and activate a first key when the directory holds none; record when the keyring
    started signing low-S only."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    if any(keys_dir.glob("*.pem")):
        state = _read_state(keys_dir)
        if LOW_S_SINCE not in state:
            # Keys an earlier version signed with: about half its unexpired tokens are high-S,
            # and are honoured until they expire (tokens.verify), not refused at the upgrade.
            state[LOW_S_SINCE] = int(time.time())
            _write_state(keys_dir, state)
        return
    kid = generate_key(keys_dir)
    state = _read_state(keys_dir)
    state["active"] = kid
    state[LOW_S_SINCE] = 0  # a new keyring: every token it signs is low-S
    _write_state(keys_dir, state)


def load_snapshot(keys_dir: Path) -> Snapshot:
    """The keyring as on disk; unusable `*.pem` files are passed over (see Snapshot.skipped).
    Raises KeyringError when no usable key is left."""
    keys, skipped = _load_keys(keys_dir)
    if not keys:
        detail = f" ({_describe(skipped)})" if skipped else ""
        raise KeyringError(f"no usable signing key in {keys_dir}{detail}", skipped=skipped)
    try:
        state = _read_state(keys_dir)
    except KeyringError as exc:
        exc.skipped = skipped
        raise
    retired = frozenset(k for k in state.get("retired", {}) if k in keys)
    active_kid = state.get("active")
    if active_kid not in keys or active_kid in retired:
        usable = [k for k in keys.values() if k.kid not in retired]
        if not usable:
            raise KeyringError("every signing key is retired: generate and activate one", skipped=skipped)
        active_kid = max(usable, key=lambda k: (k.created, k.kid)).kid
    deactivated = {k: int(v) for k, v in state.get("deactivated", {}).items() if k in keys}
    return Snapshot(keys, keys[active_kid], retired, deactivated, skipped,
                    high_s_before=_whole(state.get(LOW_S_SINCE)))


def _whole(value: Any) -> int:
    """A whole-seconds stamp of keyring.json, 0 when absent or unreadable (edited by hand)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _cli_snapshot(keys_dir: Path) -> Snapshot:
    """load_snapshot for `tokensvc keys …`: says which files it passed over."""
    snap = load_snapshot(keys_dir)
    for s in snap.skipped:
        log.warning("tokensvc: skipped %s: %s", s.path, s.reason)
    return snap


def activate(keys_dir: Path, kid: str) -> None:
    """Make kid the signing key; the previous one keeps verifying until retired."""
    snap = _cli_snapshot(keys_dir)
    if kid not in snap.keys:
        raise KeyringError(f"no key {kid} in {keys_dir}")
    if kid in snap.retired:
        raise KeyringError(f"key {kid} is retired")
    state = _read_state(keys_dir)
    previous = snap.active.kid
    if previous != kid:
        state.setdefault("deactivated", {})[previous] = int(time.time())
    state.get("deactivated", {}).pop(kid, None)
    state["active"] = kid
    _write_state(keys_dir, state)


def retire(keys_dir: Path, kid: str, *, max_ttl: int, force: bool = False) -> None:
    """Stop verifying and publishing kid; refused while tokens it signed may still be valid."""
    snap = _cli_snapshot(keys_dir)
    if kid not in snap.keys:
        raise KeyringError(f"no key {kid} in {keys_dir}")
    if kid == snap.active.kid:
        raise KeyringError(f"key {kid} is the active key: activate another first")
    since = snap.deactivated.get(kid)
    safe_at = (since or 0) + acceptable_for(max_ttl)
    if not force and since is not None and time.time() < safe_at:
        raise KeyringError(f"tokens signed by {kid} may be valid until "
                           f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(safe_at))}; use --force to retire now")
    state = _read_state(keys_dir)
    state.setdefault("retired", {})[kid] = int(time.time())
    _write_state(keys_dir, state)


def key_listing(keys_dir: Path) -> list[dict[str, Any]]:
    snap = _cli_snapshot(keys_dir)
    return [{"kid": k.kid, "created": k.created,
             "status": "active" if k.kid == snap.active.kid else "retired" if k.kid in snap.retired else "verifying"}
            for k in sorted(snap.keys.values(), key=lambda k: (k.created, k.kid))]


class Keyring:
    """The running server's keyring: a snapshot reloaded when the keys directory changes."""

    def __init__(self, keys_dir: Path, *, check_interval: float = 1.0):
        self.keys_dir = keys_dir
        self.check_interval = check_interval
        ensure_keys(keys_dir)
        self._stamp = self._dir_stamp()
        self._warned: set[tuple[str, FileStamp]] = set()
        self.snapshot = load_snapshot(keys_dir)  # KeyringError: no usable key, nothing to serve with
        self._skipped = self.snapshot.skipped
        self._warn(self._skipped)
        self._next_check = time.monotonic() + check_interval
        self._lock = threading.Lock()
        self._force = False

    def _dir_stamp(self) -> tuple[int, ...]:
        stamp = [os.stat(self.keys_dir).st_mtime_ns]
        try:
            st = os.stat(self.keys_dir / STATE_FILE)
            stamp += [st.st_mtime_ns, st.st_ino]
        except FileNotFoundError:
            pass
        return tuple(stamp)

    def _unchanged(self, stamp: tuple[int, ...]) -> bool:
        # A skipped file rewritten in place (a key still being copied in) leaves the directory's
        # stamp alone: its own stamp says it is worth another read.
        return stamp == self._stamp and all(_file_stamp(s.path) == s.stamp for s in self._skipped)

    def _warn(self, skipped: tuple[Skipped, ...]) -> None:
        """One warning per unusable file (per version of it), naming it; never its content."""
        for s in skipped:
            seen = (s.path.name, s.stamp)
            if seen not in self._warned:
                self._warned.add(seen)
                log.warning("keys: skipping %s: %s", s.path, s.reason)

    def request_reload(self) -> None:
        """Reload on the next use (SIGHUP)."""
        self._force = True

    def current(self, *, urgent: bool = False) -> Snapshot:
        """The snapshot, re-read first if the directory changed (checked at most once a second,
        or now when `urgent`, e.g. an unknown kid arrived: a few stat calls, a read only when
        something changed)."""
        mono = time.monotonic()
        if self._force or mono >= self._next_check or urgent:
            self._maybe_reload(mono)
        return self.snapshot

    def _maybe_reload(self, mono: float) -> None:
        with self._lock:
            self._next_check = mono + self.check_interval
            force, self._force = self._force, False
            stamp = self._dir_stamp()
            if not force and self._unchanged(stamp):
                return
            # This state of the directory has been read, whatever comes of it: a failed load
            # that left the stamp stale made every unknown kid re-read the whole directory.
            self._stamp = stamp
            try:
                snapshot = load_snapshot(self.keys_dir)
            except KeyringError as exc:
                # A half-finished rotation by hand: keep signing with what we had.
                self._skipped = exc.skipped
                self._warn(exc.skipped)
                log.warning("keys: %s; keeping the keys loaded before", exc)
                return
            self.snapshot = snapshot
            self._skipped = snapshot.skipped
            self._warn(snapshot.skipped)
