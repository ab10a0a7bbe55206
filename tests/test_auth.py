"""tokensvc/auth.py on its own: Basic credentials and access tokens → a Principal (SPEC §2, §4, §5).

No HTTP here: an Authenticator is built from real parts (the suite's database — a SQLite file, or
PostgreSQL under scripts/with-postgres —, a keyring and a secrets box in a temp keys directory,
its own metrics) and called as tokensvc/api/common.py calls it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import update
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import ChatGrant

from conftest import database_url
from tokensvc import errors
from tokensvc.auth import _MISSING, Authenticator, Principal, TTLCache
from tokensvc.config import Settings
from tokensvc.crypto import SecretBox, hash_secret
from tokensvc.db import Database, make_engine
from tokensvc.metrics import Metrics
from tokensvc.sids import new_sid
from tokensvc.signing import Keyring
from tokensvc.store.accounts import create_account, ensure_bootstrap_account
from tokensvc.store.api_keys import create_key, delete_key
from tokensvc.store.schema import ensure_schema
from tokensvc.store.services import create_service
from tokensvc.store.tables import api_keys
from tokensvc.tokens import mint

T = TypeVar("T")
ADDR = "192.0.2.1"


def run(db: Database, coro: Coroutine[Any, Any, T]) -> T:
    async def main() -> T:
        try:
            return await coro
        finally:
            await db.aclose()  # PostgreSQL: what lives on this loop goes with it

    return asyncio.run(main())


def basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


@dataclass
class World:
    """One account with a service and an API key, in the suite's database."""

    settings: Settings
    db: Database
    keyring: Keyring
    box: SecretBox
    account_sid: str
    auth_token: str
    service_sid: str
    key_sid: str
    key_secret: str

    def authenticator(self, **changes: Any) -> Authenticator:
        """A fresh Authenticator (empty caches, empty limiter, its own metrics)."""
        return Authenticator(settings=self.settings.with_(**changes), db=self.db, keyring=self.keyring,
                             box=self.box, metrics=Metrics())

    def basic(self, auth: Authenticator, authorization: str | None, addr: str = ADDR) -> Principal:
        return run(self.db, auth.basic(authorization, addr))

    def refused(self, auth: Authenticator, authorization: str | None, addr: str = ADDR) -> errors.TwilioError:
        with pytest.raises(errors.TwilioError) as caught:
            self.basic(auth, authorization, addr)
        return caught.value

    def client(self, auth: Authenticator, token: str) -> Principal:
        return run(self.db, auth.client(token))

    def client_refused(self, auth: Authenticator, token: str) -> errors.TwilioError:
        with pytest.raises(errors.TwilioError) as caught:
            self.client(auth, token)
        return caught.value

    def token(self, *, identity: str = "alice", service_sid: str | None = None, account_sid: str | None = None,
              ttl: int = 600, now: int | None = None) -> str:
        """A tokensvc-signed (ES256) access token, as POST /Tokens mints it."""
        return mint(self.keyring.current(), issuer=self.settings.issuer, account_sid=account_sid or self.account_sid,
                    service_sid=service_sid or self.service_sid, identity=identity, ttl=ttl, now=now).token

    def twilio_token(self, *, secret: str | None = None, key_sid: str | None = None, account_sid: str | None = None,
                     service_sid: str | None = None, identity: str = "bob", ttl: int = 600) -> str:
        """A Twilio-format (HS256) token, as a backend mints it with the twilio helper library."""
        token = AccessToken(account_sid or self.account_sid, key_sid or self.key_sid, secret or self.key_secret,
                            identity=identity, ttl=ttl)
        token.add_grant(ChatGrant(service_sid=service_sid or self.service_sid))
        return token.to_jwt()

    def new_account(self) -> tuple[str, str, str]:
        """Another account: (account SID, auth token, service SID)."""
        def make(conn: Any) -> tuple[str, str, str]:
            made = create_account(conn)
            return made.sid, made.auth_token, create_service(conn, account_sid=made.sid, friendly_name="other")["sid"]
        return self.db.call(make)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = Settings(database_url=database_url(tmp_path), keys_dir=tmp_path / "keys")
    ensure_schema(settings)
    db = Database(make_engine(settings))
    box = SecretBox.load_or_create(settings.keys_dir)

    def setup(conn: Any) -> tuple[str, str, str, str, str]:
        account = create_account(conn)
        service = create_service(conn, account_sid=account.sid, friendly_name="svc")
        key, secret = create_key(conn, account_sid=account.sid, friendly_name="backend", box=box)
        return account.sid, account.auth_token, service["sid"], key["sid"], secret

    try:
        yield World(settings, db, Keyring(settings.keys_dir), box, *db.call(setup))
    finally:
        db.dispose()


def failures(auth: Authenticator, kind: str) -> float:
    assert auth.metrics is not None
    return auth.metrics.auth_failures.labels(kind)._value.get()


def assert_unauthorized(exc: errors.TwilioError) -> None:
    """SPEC §2: 401 20003 with a Basic challenge."""
    assert (exc.status, exc.code) == (401, 20003), exc.body()
    assert exc.headers.get("WWW-Authenticate") == 'Basic realm="tokensvc"'


# ---- Basic: account SID + auth token ---------------------------------------------------------------


def test_account_sid_and_auth_token_is_the_account(world: World) -> None:
    principal = world.basic(world.authenticator(), basic(world.account_sid, world.auth_token))
    assert principal == Principal("account", world.account_sid)
    assert not principal.is_client and principal.identity is None


def test_a_wrong_auth_token_is_20003_and_counted(world: World) -> None:
    auth = world.authenticator()
    assert_unauthorized(world.refused(auth, basic(world.account_sid, world.auth_token + "x")))
    assert_unauthorized(world.refused(auth, basic(world.account_sid, "")))
    assert failures(auth, "basic") == 2


def test_an_unknown_account_is_20003(world: World) -> None:
    auth = world.authenticator()
    assert_unauthorized(world.refused(auth, basic(new_sid("AC"), world.auth_token)))
    # SIDs are compared exactly: the same account in upper-case hex is no account.
    assert_unauthorized(world.refused(auth, basic("AC" + world.account_sid[2:].upper(), world.auth_token)))
    assert failures(auth, "basic") == 2


def test_the_stored_hash_and_the_dummy_hash_preimage_are_no_credentials(world: World) -> None:
    """What the database holds is not a password, and the dummy hash compared against for an
    unknown owner (crypto._DUMMY_HASH) authenticates nobody, even given its preimage."""
    auth = world.authenticator()
    assert_unauthorized(world.refused(auth, basic(world.account_sid, hash_secret(world.auth_token))))
    assert_unauthorized(world.refused(auth, basic(new_sid("AC"), "tokensvc-dummy")))
    assert_unauthorized(world.refused(auth, basic(new_sid("SK"), "tokensvc-dummy")))


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer abc", "Basic", "Basic ", "Basic !!!notbase64", "Basic " + "é" * 8,
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
    basic("alice", "secret"),  # not a SID: never reaches the database
    basic("AC\x00" + "0" * 31, "secret"),  # a NUL: PostgreSQL would refuse it in a query
    basic("AC" + "0" * 32 + "0", "secret"),  # 35 characters
])
def test_malformed_or_missing_credentials_are_20003(world: World, authorization: str | None) -> None:
    assert_unauthorized(world.refused(world.authenticator(), authorization))


def test_no_credentials_at_all_is_a_challenge_not_a_failure(world: World) -> None:
    """The first request of a Basic handshake carries nothing: it is neither counted as a
    failure nor held against the address by the limiter."""
    auth = world.authenticator(auth_fail_limit=1)
    for _ in range(3):
        assert_unauthorized(world.refused(auth, None))
    assert failures(auth, "basic") == 0
    assert world.basic(auth, basic(world.account_sid, world.auth_token)).kind == "account"


# ---- Basic: API key SID + secret ---------------------------------------------------------------------


def test_api_key_sid_and_secret_act_for_the_keys_account(world: World) -> None:
    principal = world.basic(world.authenticator(), basic(world.key_sid, world.key_secret))
    assert principal == Principal("key", world.account_sid, key_sid=world.key_sid)
    assert not principal.is_client


def test_a_wrong_api_key_secret_is_20003(world: World) -> None:
    auth = world.authenticator()
    assert_unauthorized(world.refused(auth, basic(world.key_sid, world.key_secret[:-1])))
    assert_unauthorized(world.refused(auth, basic(new_sid("SK"), world.key_secret)))


def test_secrets_do_not_cross_between_account_and_key(world: World) -> None:
    auth = world.authenticator()
    assert_unauthorized(world.refused(auth, basic(world.account_sid, world.key_secret)))
    assert_unauthorized(world.refused(auth, basic(world.key_sid, world.auth_token)))


def test_a_deleted_key_is_refused_once_forgotten(world: World) -> None:
    """Within cache_seconds a deleted key may still be honoured; forget() (what effects.apply
    calls after ApiKeyRemoved) ends that at once in this process."""
    auth = world.authenticator(cache_seconds=3600)
    creds = basic(world.key_sid, world.key_secret)
    assert world.basic(auth, creds).kind == "key"
    world.db.call(lambda conn: delete_key(conn, account_sid=world.account_sid, sid=world.key_sid))
    assert world.basic(auth, creds).kind == "key"  # served from the cache, as documented
    auth.forget()
    assert_unauthorized(world.refused(auth, creds))
    # And a fresh process never honours it.
    assert_unauthorized(world.refused(world.authenticator(), creds))


# ---- the credential cache ----------------------------------------------------------------------------


def test_forget_makes_a_changed_auth_token_visible_at_once(world: World) -> None:
    auth = world.authenticator(cache_seconds=3600)
    old, new = basic(world.account_sid, world.auth_token), basic(world.account_sid, "rotated-" + world.auth_token)
    assert world.basic(auth, old).kind == "account"
    world.db.call(lambda conn: ensure_bootstrap_account(conn, sid=world.account_sid,
                                                        auth_token="rotated-" + world.auth_token))
    assert world.basic(auth, old).kind == "account"  # the cache still holds the old hash
    assert_unauthorized(world.refused(auth, new))
    auth.forget()
    assert_unauthorized(world.refused(auth, old))
    assert world.basic(auth, new).kind == "account"


def test_an_account_created_after_a_refusal_is_seen_once_forgotten(world: World) -> None:
    """Refusals are cached too (a spray of unknown SIDs costs no query each): forget() drops them."""
    auth = world.authenticator(cache_seconds=3600)
    sid, token = new_sid("AC"), "a-token-made-later"
    assert_unauthorized(world.refused(auth, basic(sid, token)))
    world.db.call(lambda conn: create_account(conn, sid=sid, auth_token=token))
    assert_unauthorized(world.refused(auth, basic(sid, token)))
    auth.forget()
    assert world.basic(auth, basic(sid, token)) == Principal("account", sid)


def test_cache_entries_expire_after_cache_seconds(world: World) -> None:
    auth = world.authenticator(cache_seconds=0.2)
    creds = basic(world.key_sid, world.key_secret)
    assert world.basic(auth, creds).kind == "key"
    world.db.call(lambda conn: delete_key(conn, account_sid=world.account_sid, sid=world.key_sid))
    time.sleep(0.3)
    assert_unauthorized(world.refused(auth, creds))


def test_ttl_cache_is_bounded_and_evicts_the_least_recently_put() -> None:
    cache: TTLCache[str, int | None] = TTLCache(ttl=60, maxsize=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)  # put again: now the newest
    cache.put("c", 4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (3, _MISSING, 4)
    cache.discard("a")
    assert cache.get("a") is _MISSING
    cache.put("refused", None)  # a cached refusal is a value, not a miss
    assert cache.get("refused") is None


# ---- constant-time comparison ------------------------------------------------------------------------


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every hmac.compare_digest call (still made, by the real function)."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize("who", ["right", "wrong", "unknown account", "unknown key", "not a sid"])
def test_every_basic_check_is_one_constant_time_comparison_of_equal_length_hashes(
        world: World, compare_digest_calls: list[tuple[Any, Any]], who: str) -> None:
    """By reading: basic() → crypto.secret_matches → hmac.compare_digest(sha256 hex, stored hex
    or a dummy). Here: exactly one such call whatever the outcome, an unknown owner included, so
    the time taken does not tell an existing SID from another."""
    username, secret = {
        "right": (world.account_sid, world.auth_token),
        "wrong": (world.account_sid, "wrong"),
        "unknown account": (new_sid("AC"), "wrong"),
        "unknown key": (new_sid("SK"), "wrong"),
        "not a sid": ("alice", "wrong"),
    }[who]
    auth = world.authenticator()
    try:
        world.basic(auth, basic(username, secret))
    except errors.TwilioError as exc:
        assert who != "right"
        assert_unauthorized(exc)
    else:
        assert who == "right"
    assert len(compare_digest_calls) == 1, compare_digest_calls
    presented, stored = compare_digest_calls[0]
    assert presented == hashlib.sha256(secret.encode()).hexdigest()
    assert isinstance(stored, str) and len(stored) == len(presented) == 64


def test_an_hs256_signature_is_compared_in_constant_time(
        world: World, compare_digest_calls: list[tuple[Any, Any]]) -> None:
    forged = world.twilio_token(secret="not-the-" + world.key_secret)
    assert world.client_refused(world.authenticator(), forged).code == 20101
    assert [len(a) for a, _ in compare_digest_calls] == [32]  # the HMAC-SHA256 digests, as bytes


# ---- X-Twilio-Token: a client's access token ---------------------------------------------------------


def test_a_tokensvc_token_is_a_client_of_its_service(world: World) -> None:
    principal = world.client(world.authenticator(), world.token(identity="alice"))
    assert principal.kind == "client" and principal.is_client
    assert principal.account_sid == world.account_sid and principal.key_sid is None
    assert principal.identity == "alice"
    assert principal.token is not None and principal.token.service_sid == world.service_sid


def test_a_twilio_helper_token_is_a_client_carrying_its_api_key(world: World) -> None:
    principal = world.client(world.authenticator(), world.twilio_token(identity="bob"))
    assert (principal.kind, principal.account_sid, principal.key_sid, principal.identity) == (
        "client", world.account_sid, world.key_sid, "bob")


def test_an_expired_token_is_20104(world: World) -> None:
    auth = world.authenticator()
    exc = world.client_refused(auth, world.token(ttl=600, now=int(time.time()) - 3600))
    assert (exc.status, exc.code) == (401, 20104)
    assert failures(auth, "token") == 1


def test_a_token_for_a_service_of_another_account_is_20101(world: World) -> None:
    _, _, foreign_service = world.new_account()
    auth = world.authenticator()
    for token in (world.token(service_sid=foreign_service), world.twilio_token(service_sid=foreign_service),
                  world.token(service_sid=new_sid("IS"))):  # or of no service at all
        exc = world.client_refused(auth, token)
        assert (exc.status, exc.code) == (401, 20101), exc.body()
    assert failures(auth, "token") == 3


def test_an_api_key_token_claiming_another_account_is_20101(world: World) -> None:
    other_account, _, other_service = world.new_account()
    exc = world.client_refused(world.authenticator(),
                               world.twilio_token(account_sid=other_account, service_sid=other_service))
    assert (exc.status, exc.code) == (401, 20101)


def _flip_signature(token: str) -> str:
    head, body, sig = token.split(".")
    # The first character, not the last: the last one's low bits may be padding.
    return f"{head}.{body}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"


def _resigned_claims(token: str, **grants: Any) -> str:
    """The token with its claims changed and its signature kept."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["grants"].update(grants)
    new_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{new_body}.{sig}"


@pytest.mark.parametrize("forge", [
    lambda w, tmp: _flip_signature(w.token()),
    lambda w, tmp: _flip_signature(w.twilio_token()),
    lambda w, tmp: _resigned_claims(w.token(identity="alice"), identity="mallory"),
    lambda w, tmp: _resigned_claims(w.twilio_token(identity="bob"), identity="mallory"),
    lambda w, tmp: w.twilio_token(secret="guessed-" + w.key_secret),
    lambda w, tmp: w.twilio_token(key_sid=new_sid("SK")),  # no such API key
    # Signed by a key from another keys directory: its kid is unknown here.
    lambda w, tmp: mint(Keyring(tmp / "elsewhere").current(), issuer="evil", account_sid=w.account_sid,
                        service_sid=w.service_sid, identity="alice", ttl=600).token,
    lambda w, tmp: ".".join([base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode(),
                             w.token().split(".")[1], ""]),
    lambda w, tmp: "not a token",
], ids=["es256-signature", "hs256-signature", "es256-claims", "hs256-claims", "hs256-wrong-secret",
        "hs256-unknown-key", "foreign-signing-key", "alg-none", "garbage"])
def test_a_forged_token_is_20101(world: World, tmp_path: Path, forge: Callable[[World, Path], str]) -> None:
    auth = world.authenticator()
    exc = world.client_refused(auth, forge(world, tmp_path))
    assert (exc.status, exc.code) == (401, 20101), exc.body()
    assert failures(auth, "token") == 1


def test_a_deleted_keys_tokens_are_refused_once_forgotten(world: World) -> None:
    auth = world.authenticator(cache_seconds=3600)
    token = world.twilio_token()
    assert world.client(auth, token).key_sid == world.key_sid
    world.db.call(lambda conn: delete_key(conn, account_sid=world.account_sid, sid=world.key_sid))
    assert world.client(auth, token).key_sid == world.key_sid  # cached, within cache_seconds
    auth.forget()
    assert world.client_refused(auth, token).code == 20101


def test_a_key_sealed_with_another_secrets_key_verifies_nothing_and_says_so_without_the_secret(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A replica with a different secrets.key cannot open the stored secret: its tokens are
    refused (20101) and the warning names the key, never its secret."""
    other_box = SecretBox.load_or_create(tmp_path / "other-keys")
    world.db.call(lambda conn: conn.execute(update(api_keys).where(api_keys.c.sid == world.key_sid)
                                            .values(secret_enc=other_box.encrypt(world.key_secret, world.key_sid))))
    caplog.set_level(logging.DEBUG)
    token = world.twilio_token()
    assert world.client_refused(world.authenticator(), token).code == 20101
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(world.key_sid in r.getMessage() for r in warnings), caplog.records
    for record in caplog.records:
        assert world.key_secret not in record.getMessage() and token not in record.getMessage()


# ---- the failed-login limit (auth owns it: FailureLimiter in basic()) -------------------------------


def test_an_address_over_the_limit_is_refused_even_with_right_credentials(world: World) -> None:
    auth = world.authenticator(auth_fail_limit=3, auth_fail_window=60)
    right = basic(world.account_sid, world.auth_token)
    for _ in range(3):
        assert_unauthorized(world.refused(auth, basic(new_sid("AC"), "guess"), addr="203.0.113.9"))
    exc = world.refused(auth, right, addr="203.0.113.9")
    assert (exc.status, exc.code) == (429, 20429)
    assert 1 <= int(exc.headers["Retry-After"]) <= 61
    assert failures(auth, "limited") == 1 and failures(auth, "basic") == 3
    # Another address is not slowed down.
    assert world.basic(auth, right, addr="198.51.100.7").kind == "account"


def test_malformed_credentials_count_against_the_address(world: World) -> None:
    auth = world.authenticator(auth_fail_limit=2, auth_fail_window=60)
    malformed = "Basic " + base64.b64encode(b"no-colon").decode()
    for _ in range(2):
        assert_unauthorized(world.refused(auth, malformed))
    assert world.refused(auth, basic(world.account_sid, world.auth_token)).code == 20429


def test_an_account_over_the_limit_refuses_only_addresses_that_failed_against_it(world: World) -> None:
    auth = world.authenticator(auth_fail_limit=3, auth_fail_window=60)
    right = basic(world.key_sid, world.key_secret)  # an API key SID is limited like an account
    attackers = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    for addr in attackers:  # each address stays under its own limit
        assert_unauthorized(world.refused(auth, basic(world.key_sid, "guess"), addr=addr))
    for addr in attackers:
        assert world.refused(auth, right, addr=addr).code == 20429
    assert world.basic(auth, right, addr="198.51.100.7").key_sid == world.key_sid  # a valid caller elsewhere
    # The account's own auth token, a different username, is not held back by its key's failures.
    assert world.basic(auth, basic(world.account_sid, world.auth_token), addr=attackers[0]).kind == "account"


def test_the_limit_ends_with_its_window(world: World) -> None:
    auth = world.authenticator(auth_fail_limit=1, auth_fail_window=1)
    right = basic(world.account_sid, world.auth_token)
    assert_unauthorized(world.refused(auth, basic(world.account_sid, "guess")))
    assert world.refused(auth, right).code == 20429
    time.sleep(1.1)
    assert world.basic(auth, right).kind == "account"


# ---- nothing secret in the logs ------------------------------------------------------------------------


def test_no_secret_reaches_a_log_record_or_an_error_on_failure_paths(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = world.authenticator(auth_fail_limit=4, cache_seconds=3600)
    wrong = "wrong-" + world.auth_token
    presented = [
        basic(world.account_sid, wrong),
        basic(world.key_sid, world.auth_token),
        basic(world.account_sid, world.key_secret),
        basic(new_sid("AC"), world.auth_token),
        basic(world.account_sid, world.auth_token),  # refused by the limiter by now
    ]
    tokens = [world.token(ttl=60, now=int(time.time()) - 3600), _flip_signature(world.twilio_token()),
              world.twilio_token(secret=wrong)]
    raised: list[errors.TwilioError] = []
    for authorization in presented:
        raised.append(world.refused(auth, authorization))
    assert raised[-1].code == 20429
    for token in tokens:
        raised.append(world.client_refused(auth, token))
    secrets = [world.auth_token, world.key_secret, wrong, hash_secret(world.auth_token),
               hash_secret(world.key_secret), *[p.split(" ", 1)[1] for p in presented],
               *[t.split(".")[2] for t in tokens if t.split(".")[2]]]
    logged = [(r.getMessage(), repr(r.args), r.exc_text or "") for r in caplog.records]
    for secret in secrets:
        for text in logged:
            assert secret not in " ".join(text), (secret, text)
        for exc in raised:
            assert secret not in json.dumps(exc.body()) + json.dumps(exc.headers)
