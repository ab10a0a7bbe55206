"""The keyring: generation, kids, rotation state, JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import time
from pathlib import Path

import jwt
import pytest

from tokensvc import signing
from tokensvc.tokens import mint, verify


def test_first_key_is_generated_with_mode_0600(tmp_path: Path) -> None:
    ring = signing.Keyring(tmp_path / "keys")
    pems = list((tmp_path / "keys").glob("*.pem"))
    assert len(pems) == 1
    assert stat.S_IMODE(pems[0].stat().st_mode) == 0o600
    assert pems[0].stem == ring.current().active.kid


def test_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    ring = signing.Keyring(tmp_path)
    jwk = ring.current().jwks()["keys"][0]
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
                           separators=(",", ":"))
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == expected and jwk["alg"] == "ES256" and jwk["use"] == "sig"


def test_tokens_verify_with_pyjwt_against_the_jwks(tmp_path: Path) -> None:
    snap = signing.Keyring(tmp_path).current()
    minted = mint(snap, issuer="tokensvc", account_sid="AC" + "1" * 32, service_sid="IS" + "2" * 32,
                  identity="alice", ttl=60)
    jwk = jwt.PyJWK(snap.jwks()["keys"][0])
    claims = jwt.decode(minted.token, jwk.key, algorithms=["ES256"])
    assert claims["grants"]["identity"] == "alice"


def test_rotation_state_and_retire_guard(tmp_path: Path) -> None:
    ring = signing.Keyring(tmp_path, check_interval=0)
    old = ring.current().active.kid
    new = signing.generate_key(tmp_path)
    assert ring.current().active.kid == old  # generated keys do not sign until activated
    signing.activate(tmp_path, new)
    snap = ring.current()
    assert snap.active.kid == new and snap.verification_key(old) is not None
    with pytest.raises(signing.KeyringError):
        signing.retire(tmp_path, new, max_ttl=60)  # the active key
    with pytest.raises(signing.KeyringError, match="--force"):
        signing.retire(tmp_path, old, max_ttl=60)
    signing.retire(tmp_path, old, max_ttl=60, force=True)
    snap = ring.current()
    assert snap.verification_key(old) is None
    assert [k["kid"] for k in snap.jwks()["keys"]] == [new]
    statuses = {k["kid"]: k["status"] for k in signing.key_listing(tmp_path)}
    assert statuses == {old: "retired", new: "active"}


def test_retire_is_allowed_once_tokens_have_expired(tmp_path: Path) -> None:
    signing.ensure_keys(tmp_path)
    old = signing.load_snapshot(tmp_path).active.kid
    new = signing.generate_key(tmp_path)
    signing.activate(tmp_path, new)
    state = json.loads((tmp_path / "keyring.json").read_text())
    state["deactivated"][old] = int(time.time()) - 200
    (tmp_path / "keyring.json").write_text(json.dumps(state))
    signing.retire(tmp_path, old, max_ttl=100)
    assert signing.load_snapshot(tmp_path).verification_key(old) is None


def test_sighup_style_reload_is_immediate(tmp_path: Path) -> None:
    ring = signing.Keyring(tmp_path, check_interval=3600)
    new = signing.generate_key(tmp_path)
    signing.activate(tmp_path, new)
    assert ring.current().active.kid != new  # not re-checked yet
    ring.request_reload()
    assert ring.current().active.kid == new


def test_unknown_kid_triggers_an_urgent_reload(tmp_path: Path) -> None:
    ring = signing.Keyring(tmp_path, check_interval=3600)
    other = signing.generate_key(tmp_path)
    signing.activate(tmp_path, other)
    fresh = signing.load_snapshot(tmp_path)
    minted = mint(fresh, issuer="x", account_sid="AC" + "1" * 32, service_sid="IS" + "2" * 32, identity="a", ttl=60)
    verified = verify(minted.token, snapshot=ring.snapshot, lookup_api_key=lambda sid: None,
                      refresh_snapshot=lambda: ring.current(urgent=True))
    assert verified.identity == "a"


def test_a_broken_pem_is_skipped_and_reported(tmp_path: Path) -> None:
    signing.ensure_keys(tmp_path)
    good = signing.load_snapshot(tmp_path).active.kid
    (tmp_path / "junk.pem").write_text("not a key")
    snap = signing.load_snapshot(tmp_path)
    assert snap.active.kid == good and list(snap.keys) == [good]
    assert [s.path.name for s in snap.skipped] == ["junk.pem"]


def test_a_dir_of_broken_pems_is_an_error_naming_dir_and_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(signing.KeyringError, match="junk.pem") as caught:
        signing.load_snapshot(tmp_path)
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("argv", [
    ["keys", "retire", "-abc", "--force"], ["keys", "retire", "--force", "-abc"], ["keys", "--force", "retire", "-abc"],
    ["keys", "retire", "--", "-abc", "--force"],
])
def test_cli_takes_a_kid_that_starts_with_a_dash(argv: list[str]) -> None:
    from tokensvc.cli import _keys_argv, build_parser

    args = build_parser().parse_args(_keys_argv(argv))
    assert (args.action, args.kid, args.force) == ("retire", "-abc", True)


def _high_s(token: str) -> str:
    """The other valid ECDSA spelling of a token's signature: (r, n - s)."""
    import base64

    from tokensvc.signing import ORDER

    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    s = ORDER - int.from_bytes(raw[32:], "big")
    return f"{head}.{body}." + base64.urlsafe_b64encode(raw[:32] + s.to_bytes(32, "big")).decode().rstrip("=")


def test_high_s_tokens_of_an_upgraded_keyring_stay_valid_until_they_expire(tmp_path: Path) -> None:
    """Earlier versions signed without normalising s: about half their live tokens are high-S.
    They are honoured until they expire; tokens issued after the upgrade must be low-S."""
    import json
    import time

    from tokensvc import errors
    from tokensvc.signing import LOW_S_SINCE, Keyring, ensure_keys, load_snapshot
    from tokensvc.tokens import mint, verify

    keys = tmp_path / "keys"
    ensure_keys(keys)  # a new keyring: never signed high-S
    assert json.loads((keys / "keyring.json").read_text())[LOW_S_SINCE] == 0
    now = int(time.time())
    snap = load_snapshot(keys)
    before = mint(snap, issuer="t", account_sid="AC" + "1" * 32, service_sid="IS" + "1" * 32, identity="a",
                  ttl=600, now=now - 100).token

    def ok(token: str, snapshot: object) -> bool:
        try:
            verify(token, snapshot=snapshot, lookup_api_key=lambda sid: None, max_ttl=3600, now=now)
        except errors.TwilioError as exc:
            assert exc.code == 20101
            return False
        return True

    assert ok(before, snap) and not ok(_high_s(before), snap)
    # The same keys dir as an earlier version left it: no low_s_since yet.
    state = json.loads((keys / "keyring.json").read_text())
    del state[LOW_S_SINCE]
    (keys / "keyring.json").write_text(json.dumps(state))
    upgraded = Keyring(keys).current()  # what a starting server does
    assert upgraded.high_s_before >= now
    assert ok(_high_s(before), upgraded)  # issued before the upgrade: still valid
    after = mint(upgraded, issuer="t", account_sid="AC" + "1" * 32, service_sid="IS" + "1" * 32, identity="a",
                 ttl=600, now=upgraded.high_s_before + 1).token
    assert not ok(_high_s(after), upgraded)  # issued after it: only its low-S spelling
