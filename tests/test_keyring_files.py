"""Unusable `*.pem` files in the keys directory: skipped with one warning, never a reload per
request, and a clear refusal to start when no usable key is left (SPEC §4, §6)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import database_url, free_port, start_server
from tokensvc import errors, signing
from tokensvc.tokens import mint, verify

ACCOUNT = "AC" + "1" * 32
SERVICE = "IS" + "2" * 32
MARKER = "MARKER-7f3a"  # stands for file content: must never reach a log line
JUNK = f"-----BEGIN PRIVATE KEY-----\n{MARKER}c2VjcmV0\n-----END PRIVATE KEY-----\n"


def pem(private: Any, *, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def stray_token(kid: str = "unknown-kid") -> str:
    """A token signed by a key the keyring does not hold, named by a kid it does not know."""
    private = ec.generate_private_key(ec.SECP256R1())
    key = signing.SigningKey(kid, private, private.public_key(), 0)
    now = int(time.time())
    return key.sign({"jti": "j", "iss": "x", "sub": ACCOUNT, "iat": now, "nbf": now, "exp": now + 60,
                     "grants": {"identity": "a", "chat": {"service_sid": SERVICE}}})


class CountingLoads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls = 0
        real = signing.load_snapshot

        def counted(keys_dir: Path) -> signing.Snapshot:
            self.calls += 1
            return real(keys_dir)

        monkeypatch.setattr(signing, "load_snapshot", counted)


def bump_dir(keys_dir: Path) -> None:
    """Make sure the directory's mtime moves even on a coarse-grained file system."""
    st = os.stat(keys_dir)
    os.utime(keys_dir, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


# ---- unit: Keyring and load_snapshot -----------------------------------------------------------

@pytest.mark.parametrize("content", [
    JUNK.encode(), b"", b"not a key at all",
    pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    pem(ed25519.Ed25519PrivateKey.generate()),
    pem(ec.generate_private_key(ec.SECP384R1())),
    pem(ec.generate_private_key(ec.SECP256R1()), password=b"pw"),
    ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
], ids=["junk", "empty", "text", "rsa", "ed25519", "p384", "encrypted", "public-only"])
def test_an_unusable_pem_next_to_a_good_key_is_skipped_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    signing.ensure_keys(tmp_path)
    good = signing.load_snapshot(tmp_path).active.kid
    (tmp_path / "junk.pem").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="tokensvc.keys"):
        ring = signing.Keyring(tmp_path, check_interval=0)
        for _ in range(20):
            ring.current(urgent=True)
        ring.request_reload()
        ring.current()
    assert ring.current().active.kid == good
    lines = [r.getMessage() for r in caplog.records if r.name == "tokensvc.keys"]
    assert len(lines) == 1 and "junk.pem" in lines[0], lines
    assert MARKER not in caplog.text and "BEGIN" not in caplog.text


def test_unknown_kids_do_not_reread_the_directory_after_a_bad_file_appeared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ring = signing.Keyring(tmp_path, check_interval=3600)
    loads = CountingLoads(monkeypatch)
    (tmp_path / "junk.pem").write_text(JUNK)
    bump_dir(tmp_path)
    token = stray_token()
    for _ in range(200):
        with pytest.raises(errors.TwilioError):
            verify(token, snapshot=ring.snapshot, lookup_api_key=lambda sid: None,
                   refresh_snapshot=lambda: ring.current(urgent=True))
    assert loads.calls == 1  # the one read that noticed junk.pem
    assert ring.current().active.kid in ring.current().keys


def test_a_failed_reload_does_not_leave_the_stamp_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    ring = signing.Keyring(tmp_path, check_interval=0)
    before = ring.current().active.kid
    loads = CountingLoads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="tokensvc.keys"):
        (tmp_path / signing.STATE_FILE).write_text("{not json")  # a rotation half done by hand
        for _ in range(200):
            assert ring.current(urgent=True).active.kid == before  # keeps signing with what it had
    assert loads.calls == 1
    assert len([r for r in caplog.records if r.name == "tokensvc.keys"]) == 1
    # once the directory is fixed, the next check picks it up
    new = signing.generate_key(tmp_path)
    (tmp_path / signing.STATE_FILE).unlink()
    signing.activate(tmp_path, new)
    calls = loads.calls
    assert ring.current().active.kid == new and loads.calls == calls + 1


def test_a_skipped_file_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    """A key still being copied in is unusable at first; once complete it counts, although writing
    into an existing file does not touch the directory's stamp."""
    ring = signing.Keyring(tmp_path, check_interval=0)
    private = ec.generate_private_key(ec.SECP256R1())
    data = pem(private)
    path = tmp_path / "copied.pem"
    path.write_bytes(data[: len(data) // 2])
    bump_dir(tmp_path)
    assert len(ring.current().keys) == 1 and [s.path.name for s in ring.current().skipped] == ["copied.pem"]
    stamp = signing._file_stamp(path)
    with open(path, "r+b") as f:  # in place: same inode, the directory untouched
        f.write(data)
    if signing._file_stamp(path) == stamp:
        os.utime(path, ns=(stamp[0], stamp[0] + 1_000_000))
    kid = signing.thumbprint(private.public_key())
    assert ring.current().verification_key(kid) is not None


def test_rotation_works_with_a_bad_file_present(tmp_path: Path) -> None:
    signing.ensure_keys(tmp_path)
    (tmp_path / "junk.pem").write_text(JUNK)
    ring = signing.Keyring(tmp_path, check_interval=0)
    old = ring.current().active.kid
    new = signing.generate_key(tmp_path)
    signing.activate(tmp_path, new)
    snap = ring.current()
    assert snap.active.kid == new and snap.verification_key(old) is not None
    assert {k["kid"]: k["status"] for k in signing.key_listing(tmp_path)} == {old: "verifying", new: "active"}
    token = mint(snap, issuer="x", account_sid=ACCOUNT, service_sid=SERVICE, identity="a", ttl=60).token
    assert verify(token, snapshot=ring.current(), lookup_api_key=lambda sid: None).identity == "a"


def test_no_usable_key_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text(JUNK)
    (tmp_path / "rsa.pem").write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(signing.KeyringError) as caught:
        signing.Keyring(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "junk.pem" in message and "rsa.pem" in message
    assert "\n" not in message and MARKER not in message
    assert not [p for p in tmp_path.glob("*.pem") if p.name not in ("junk.pem", "rsa.pem")]  # none generated


# ---- end to end: `tokensvc serve` and `tokensvc keys` ----------------------------------------------

def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokensvc.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=60)


def test_server_with_a_bad_pem_starts_warns_once_and_rotates(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signing.ensure_keys(keys)
    first = signing.load_snapshot(keys).active.kid
    (keys / "junk.pem").write_text(JUNK)
    srv = start_server(tmp_path, keys_dir=keys)
    try:
        svc = httpx.post(f"{srv.base}/v2/Services", data={"FriendlyName": "chat"}, auth=srv.auth).json()

        def issue() -> str:
            r = httpx.post(f"{srv.base}/v2/Services/{svc['sid']}/Tokens", data={"Identity": "alice"}, auth=srv.auth)
            assert r.status_code == 201, r.text
            return r.json()["token"]

        def works(token: str) -> bool:
            r = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users/alice", headers={"X-Twilio-Token": token})
            return r.status_code == 200

        old_token = issue()
        assert signing.load_snapshot(keys).active.kid == first and works(old_token)
        for _ in range(50):  # a flood of unknown kids changes nothing
            r = httpx.get(f"{srv.base}/v2/Services/{svc['sid']}/Users", headers={"X-Twilio-Token": stray_token()})
            assert r.status_code == 401 and r.json()["code"] == 20101
        generated = _cli(srv.env, "keys", "generate")
        assert generated.returncode == 0, generated.stderr
        new = generated.stdout.strip()
        activated = _cli(srv.env, "keys", "activate", new)
        assert activated.returncode == 0 and "junk.pem" in activated.stderr, activated.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and f'"kid":"{new}"' not in _header(issue()):
            time.sleep(0.2)
        assert f'"kid":"{new}"' in _header(issue())
        assert works(issue()) and works(old_token)  # the old key still verifies
    finally:
        srv.stop()
    log = srv.logs()
    assert "Traceback" not in log
    named = [line for line in log.splitlines() if "junk.pem" in line]
    assert len(named) == 1, named
    assert MARKER not in log


def _header(token: str) -> str:
    import base64

    head = token.split(".")[0]
    return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode()


@pytest.mark.parametrize("files", [{"junk.pem": JUNK.encode()},
                                   {"junk.pem": b"", "rsa.pem": pem(rsa.generate_private_key(65537, 2048))}],
                         ids=["junk", "junk-and-rsa"])
def test_serve_refuses_to_start_without_a_usable_key(tmp_path: Path, files: dict[str, bytes]) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name, content in files.items():
        (keys / name).write_bytes(content)
    env = dict(os.environ, TOKENSVC_DATABASE_URL=database_url(tmp_path), TOKENSVC_KEYS_DIR=str(keys),
               TOKENSVC_PORT=str(free_port()), TOKENSVC_HOST="127.0.0.1")
    done = _cli(env, "serve")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Traceback" not in output and MARKER not in output
    lines = [line for line in output.splitlines() if str(keys) in line]
    assert len(lines) == 1 and lines[0].startswith("tokensvc: no usable signing key in"), output
    assert all(name in lines[0] for name in files)
