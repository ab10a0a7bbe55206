"""A process whose keys dir holds another secrets.key than the one the stored API key secrets
were encrypted with: it refuses to start, naming the file; and a secret that does not decrypt
at run time is an invalid token (401 20101), never a 500."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Server, start_server
from tokensvc.crypto import SECRET_KEY_FILE, write_private_file


def _api_key(server: Server) -> tuple[str, str]:
    r = httpx.post(f"{server.base}/2010-04-01/Accounts/{server.account_sid}/Keys.json",
                   data={"FriendlyName": "k"}, auth=server.auth, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["sid"], r.json()["secret"]


def _service(server: Server) -> str:
    r = httpx.post(f"{server.base}/v2/Services", data={"FriendlyName": "s"}, auth=server.auth, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["sid"]


def _hs256(account: str, service: str, key_sid: str, secret: str) -> str:
    """A Twilio-format access token signed by an API key (as the twilio helper library makes)."""
    now = int(time.time())
    claims = {"jti": f"{key_sid}-{now}", "iss": key_sid, "sub": account, "exp": now + 600, "nbf": now - 5,
              "grants": {"identity": "alice", "chat": {"service_sid": service}}}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"cty": "twilio-fpa;v=1"})


def _other_key(keys_dir: Path) -> None:
    (keys_dir / SECRET_KEY_FILE).unlink()
    write_private_file(keys_dir / SECRET_KEY_FILE, base64.b64encode(AESGCM.generate_key(bit_length=256)))


def test_serve_refuses_a_secrets_key_that_does_not_open_the_stored_secrets(tmp_path: Path) -> None:
    first = start_server(tmp_path, name="first")
    try:
        _api_key(first)
    finally:
        first.stop()
    keys = tmp_path / "replica-keys"
    shutil.copytree(first.env["TOKENSVC_KEYS_DIR"], keys)
    _other_key(keys)
    env = dict(first.env, TOKENSVC_KEYS_DIR=str(keys), TOKENSVC_PORT=str(first.base.rsplit(":", 1)[1]))
    done = subprocess.run([sys.executable, "-m", "tokensvc.cli", "serve"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert str(keys / SECRET_KEY_FILE) in out, out
    assert "Traceback" not in out and "serving on" not in out, out
    assert [line for line in out.splitlines() if str(keys) in line] == [out.strip().splitlines()[-1]], out


def test_serve_refuses_another_secrets_key_even_with_no_api_key_stored(tmp_path: Path) -> None:
    """secrets.key also keys the tombstones and seals page tokens: a replica with another one
    would disagree with the first on both, API keys or not."""
    first = start_server(tmp_path, name="first")
    first.stop()
    keys = tmp_path / "replica-keys"
    shutil.copytree(first.env["TOKENSVC_KEYS_DIR"], keys)
    _other_key(keys)
    env = dict(first.env, TOKENSVC_KEYS_DIR=str(keys))
    done = subprocess.run([sys.executable, "-m", "tokensvc.cli", "serve"], env=env, capture_output=True,
                          text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and str(keys / SECRET_KEY_FILE) in out, out
    assert "Traceback" not in out and "serving on" not in out, out
    # The same key starts again.
    again = start_server(tmp_path, database=first.env["TOKENSVC_DATABASE_URL"],
                         keys_dir=Path(first.env["TOKENSVC_KEYS_DIR"]), account=first.auth, name="again")
    again.stop()


def test_a_secret_that_does_not_decrypt_at_run_time_is_an_invalid_token(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        service = _service(srv)
        key_sid, secret = _api_key(srv)
        token = _hs256(srv.account_sid, service, key_sid, secret)
        ok = httpx.get(f"{srv.base}/v2/Services/{service}/Users/alice", headers={"X-Twilio-Token": token}, timeout=10)
        assert ok.status_code == 200, ok.text
        # Another secrets.key behind the running server's back (as a replica with its own keys
        # dir would have): the stored ciphertext no longer opens.
        db = srv.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///")
        if srv.env["TOKENSVC_DATABASE_URL"].startswith("sqlite"):
            import sqlite3

            other = AESGCM(AESGCM.generate_key(bit_length=256))
            nonce = os.urandom(12)
            sealed = other.encrypt(nonce, secret.encode(), key_sid.encode())
            enc = "v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE api_keys SET secret_enc = ? WHERE sid = ?", (enc, key_sid))
        else:
            from sqlalchemy import create_engine, text

            url = srv.env["TOKENSVC_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
            engine = create_engine(url)
            with engine.begin() as conn:
                conn.execute(text("UPDATE api_keys SET secret_enc = 'v1:' || secret_enc WHERE sid = :s"),
                             {"s": key_sid})
            engine.dispose()
        time.sleep(1.2)  # the API key cache (1 s) has let go of the decrypted secret
        for _ in range(3):
            r = httpx.get(f"{srv.base}/v2/Services/{service}/Users/alice", headers={"X-Twilio-Token": token},
                          timeout=10)
            assert r.status_code == 401 and r.json()["code"] == 20101, r.text
    finally:
        srv.stop()
    logs = srv.logs()
    assert "Traceback" not in logs and "InvalidTag" not in logs, logs
    assert secret not in logs and token not in logs
    assert key_sid in logs and "secrets.key" in logs  # the operator learns which key and why
