"""Secrets at rest and in logs (issue 6, SPEC §3).

Auth tokens are stored as SHA-256 only; API key secrets as SHA-256 plus an AES-GCM ciphertext
under keys/secrets.key (0600); signing keys are 0600 PEMs. A deleted user leaves no trace of its
PII in the SQLite files. Nothing secret — credentials, tokens, attributes, identities — reaches
the server's log output, on success or on error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import PG_URL, Server, start_server
from tokensvc.crypto import SECRET_KEY_FILE, SecretBox

sqlite_only = pytest.mark.skipif(PG_URL is not None, reason="inspects the SQLite files")


def marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


def db_files(server: Server) -> dict[str, bytes]:
    """The bytes of the SQLite database and its -wal and -shm companions, as they are now."""
    path = Path(server.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///"))
    return {p.name: p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()}


def assert_nowhere(blobs: dict[str, bytes], *needles: str) -> None:
    """None of the needles, in UTF-8 or as UTF-16 (SQLite may store either), in any blob."""
    for needle in needles:
        forms = [needle.encode(), needle.encode("utf-16-le"), needle.encode("utf-16-be")]
        for name, blob in blobs.items():
            for form in forms:
                assert form not in blob, f"{needle[:24]}… found in {name}"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, extra_env={"TOKENSVC_LOG_LEVEL": "debug"})
    yield server
    server.stop()


def full_flow(server: Server) -> dict[str, Any]:
    """Everything a deployment does, successes and errors, with recognisable PII and secrets."""
    seen: dict[str, Any] = {"tokens": [], "pii": []}
    identity, other = marker("identity"), marker("ident/ü")
    attributes = json.dumps({"secret_note": marker("attr")})
    new_attributes = json.dumps({"secret_note": marker("attr2")})
    friendly = marker("friendly")
    seen["pii"] += [identity, other, attributes, new_attributes, json.loads(attributes)["secret_note"],
                    json.loads(new_attributes)["secret_note"], friendly]
    with httpx.Client(base_url=server.base, auth=server.auth, timeout=10) as c:
        svc = c.post("/v2/Services", data={"FriendlyName": "secrets"}).json()["sid"]
        users = f"/v2/Services/{svc}/Users"
        user = c.post(users, data={"Identity": identity, "Attributes": attributes, "FriendlyName": friendly}).json()
        c.post(f"{users}/{quote(identity)}", data={"Attributes": new_attributes})
        c.get(f"{users}/{quote(identity)}")
        c.get(f"{users}?PageSize=10&PageToken={quote(identity)}")  # 21481, identity in the query
        c.get(f"{users}/{quote(other, safe='')}")  # 404, PII in the path
        c.post(users, data={"Identity": marker("x"), "Attributes": "{not json " + attributes})  # 50304
        key = c.post(f"/2010-04-01/Accounts/{server.account_sid}/Keys.json", data={"FriendlyName": "k"}).json()
        seen["key_secret"] = key["secret"]
        for auth in (server.auth, (key["sid"], key["secret"])):
            t = c.post(f"/v2/Services/{svc}/Tokens", data={"Identity": other, "Ttl": "600"}, auth=auth).json()
            seen["tokens"].append(t["token"])
        token = seen["tokens"][0]
        # The client app's requests with its token, good and bad.
        c.get(f"{users}/{quote(other, safe='')}", headers={"X-Twilio-Token": token}, auth=None)
        c.post(f"{users}/{quote(other, safe='')}", data={"Attributes": attributes},
               headers={"X-Twilio-Token": token}, auth=None)
        c.delete(f"{users}/{user['sid']}", headers={"X-Twilio-Token": token}, auth=None)  # 403
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        c.get(users, headers={"X-Twilio-Token": forged}, auth=None)  # 401 20101
        seen["tokens"].append(forged)
        # Wrong, malformed and oversized credentials and bodies.
        wrong = marker("wrong-auth-token")
        seen["wrong"] = wrong
        c.get("/v2/Services", auth=(server.account_sid, wrong))
        c.get("/v2/Services", auth=(key["sid"], wrong))
        c.get("/v2/Services", headers={"Authorization": "Basic " + base64.b64encode(wrong.encode()).decode()},
              auth=None)
        c.post(users, content=("Identity=" + identity + "&Attributes=" + "x" * 70000).encode(),
               headers={"Content-Type": "application/x-www-form-urlencoded"})  # 413
        c.put(f"{users}/{quote(identity)}", data={"Attributes": attributes})  # 405
        # The key signs Twilio-format tokens, as the helper library does.
        from twilio.jwt.access_token import AccessToken
        from twilio.jwt.access_token.grants import ChatGrant

        hs = AccessToken(server.account_sid, key["sid"], key["secret"], identity=identity, ttl=600)
        hs.add_grant(ChatGrant(service_sid=svc))
        hs_token = hs.to_jwt()
        seen["tokens"].append(hs_token)
        c.get(f"{users}/{quote(identity)}", headers={"X-Twilio-Token": hs_token}, auth=None)
        try:  # the WebSocket entry, with the token in its handshake
            from websockets.sync.client import connect

            with connect(server.base.replace("http", "ws") + "/v2/Connect",
                         additional_headers={"X-Twilio-Token": token}, open_timeout=5, close_timeout=1) as ws:
                ws.recv(timeout=2)
        except Exception:
            pass
        c.delete(f"{users}/{quote(identity)}")
        seen["service"] = svc
    return seen


def test_no_secret_token_or_pii_in_the_logs(srv: Server) -> None:
    seen = full_flow(srv)
    srv.stop()  # flushes everything the process had to say
    logs = srv.logs()
    assert '"route"' in logs, "the access log is missing: the test would prove nothing"
    needles = [srv.auth_token, seen["key_secret"], seen["wrong"], *seen["pii"]]
    for token in seen["tokens"]:
        needles += [token, *token.split(".")[1:]]  # the whole token, its claims and its signature
    for needle in needles:
        assert needle not in logs, f"{needle[:24]}… appears in the server's log output"


@sqlite_only
def test_credentials_are_never_stored_in_clear(srv: Server) -> None:
    seen = full_flow(srv)
    blobs = db_files(srv)
    assert blobs, "no database files found"
    assert_nowhere(blobs, srv.auth_token, seen["key_secret"], *seen["tokens"])
    # What is stored: the SHA-256 of the auth token (a high-entropy secret, so a fast hash suffices).
    assert hashlib.sha256(srv.auth_token.encode()).hexdigest().encode() in b"".join(blobs.values())


@sqlite_only
def test_api_key_secret_is_aes_gcm_encrypted_with_the_keys_directory_key(srv: Server, tmp_path: Path) -> None:
    import sqlite3

    with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=10) as c:
        key = c.post(f"/2010-04-01/Accounts/{srv.account_sid}/Keys.json").json()
    db = srv.env["TOKENSVC_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        secret_enc, secret_hash = conn.execute("SELECT secret_enc, secret_hash FROM api_keys WHERE sid = ?",
                                               (key["sid"],)).fetchone()
    assert key["secret"] not in secret_enc
    assert secret_hash == hashlib.sha256(key["secret"].encode()).hexdigest()
    keys_dir = Path(srv.env["TOKENSVC_KEYS_DIR"])
    key_file = keys_dir / SECRET_KEY_FILE
    # AES-256-GCM: "v1:" + base64url(12-byte nonce + ciphertext + 16-byte tag), bound to the key SID.
    assert secret_enc.startswith("v1:")
    raw = base64.urlsafe_b64decode(secret_enc[3:])
    aes_key = base64.b64decode(key_file.read_bytes().strip())
    assert len(aes_key) == 32
    plain = AESGCM(aes_key).decrypt(raw[:12], raw[12:], key["sid"].encode()).decode()
    assert plain == key["secret"]
    assert SecretBox.load_or_create(keys_dir).decrypt(secret_enc, key["sid"]) == key["secret"]
    with pytest.raises(InvalidTag):  # moved onto another key's row, it does not decrypt
        AESGCM(aes_key).decrypt(raw[:12], raw[12:], f"SK{'0' * 32}".encode())
    with pytest.raises(InvalidTag):  # nor with any other key
        AESGCM(AESGCM.generate_key(bit_length=256)).decrypt(raw[:12], raw[12:], key["sid"].encode())


def test_key_material_is_readable_by_its_owner_only(srv: Server) -> None:
    keys_dir = Path(srv.env["TOKENSVC_KEYS_DIR"])
    pems = list(keys_dir.glob("*.pem"))
    assert pems
    for path in [*pems, keys_dir / SECRET_KEY_FILE]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, f"{path.name} has mode {oct(mode)}"


@sqlite_only
def test_deleted_user_leaves_no_trace_in_the_database_files(srv: Server) -> None:
    """SPEC §3: after DELETE its identity, friendly name and attributes are gone from the files —
    the table, the unique index, the free pages and the WAL."""
    identity, friendly = marker("gone-identity"), marker("gone-friendly")
    first_attrs, attrs = json.dumps({"n": marker("gone-attr1")}), json.dumps({"n": marker("gone-attr2")})
    with httpx.Client(base_url=srv.base, auth=srv.auth, timeout=10) as c:
        svc = c.post("/v2/Services", data={"FriendlyName": "s"}).json()["sid"]
        users = f"/v2/Services/{svc}/Users"
        # Neighbours on the same pages, so the deleted rows' pages stay in use.
        for n in range(20):
            c.post(users, data={"Identity": f"neighbour-{n}", "Attributes": json.dumps({"n": n})})
        assert c.post(users, data={"Identity": identity, "FriendlyName": friendly,
                                   "Attributes": first_attrs}).status_code == 201
        assert c.post(f"{users}/{identity}", data={"Attributes": attrs}).status_code == 200
        auto = marker("gone-auto")  # provisioned by the token endpoint
        assert c.post(f"/v2/Services/{svc}/Tokens", data={"Identity": auto}).status_code == 201
        assert identity.encode() in b"".join(db_files(srv).values()), "the test would prove nothing"
        assert c.delete(f"{users}/{identity}").status_code == 204
        assert c.delete(f"{users}/{auto}").status_code == 204
        assert c.get(f"{users}/{identity}").status_code == 404
    assert_nowhere(db_files(srv), identity, friendly, auto, first_attrs, attrs,
                   json.loads(first_attrs)["n"], json.loads(attrs)["n"])
    srv.stop()  # and after the server has closed its connections and checkpointed
    assert_nowhere(db_files(srv), identity, friendly, auto, json.loads(attrs)["n"])
