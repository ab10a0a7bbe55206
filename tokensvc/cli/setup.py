"""What `serve` and every command that acts on the database prepare first: the schema, the
signing keys, the bootstrap account, and the check that this secrets.key is the one the other
processes of the database use."""

from __future__ import annotations

from ..config import Settings


def prepare(settings: Settings, *, migrate: bool) -> None:
    """Schema, signing keys and the bootstrap account, before any worker starts."""
    from sqlalchemy import select

    from ..crypto import SECRET_KEY_FILE, SecretBox
    from ..db import Database, make_engine
    from ..signing import KeyringError, ensure_keys, load_snapshot
    from ..store.accounts import ensure_bootstrap_account, record_key_check, served_account
    from ..store.schema import SchemaOutOfDate, ensure_schema
    from ..store.tables import api_keys

    try:
        ensure_schema(settings, migrate=migrate)
    except SchemaOutOfDate as exc:
        raise SystemExit(f"tokensvc: {exc}") from None
    ensure_keys(settings.keys_dir)
    try:  # the workers would fail on it one by one, each with a traceback
        load_snapshot(settings.keys_dir)
    except KeyringError as exc:
        raise SystemExit(f"tokensvc: {exc}") from None
    box_path = settings.keys_dir / SECRET_KEY_FILE
    try:
        box = SecretBox.load_or_create(settings.keys_dir)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"tokensvc: cannot use {box_path}: {exc}") from None
    db = Database(make_engine(settings))
    try:
        made = db.call(lambda conn: ensure_bootstrap_account(conn, sid=settings.account_sid,
                                                             auth_token=settings.auth_token, box=box))
        served = db.call(lambda conn: served_account(conn, settings.account_sid))
        same_key = db.call(lambda conn: record_key_check(conn, sid=served, check=box.check_value()))
        # A replica given another secrets.key would start, then refuse every HS256 token of the
        # existing API keys: the newest stored secret of the account it serves must open too.
        newest = None
        if served is not None:
            query = (select(api_keys.c.sid, api_keys.c.secret_enc).where(api_keys.c.account_sid == served)
                     .order_by(api_keys.c.id.desc()).limit(1))
            newest = db.call(lambda conn: conn.execute(query).first())
    finally:
        db.dispose()
    if not same_key or (newest is not None and not box.opens(newest.secret_enc, newest.sid)):
        raise SystemExit(f"tokensvc: {box_path} is not the key the other processes serving this account use (its "
                         "stored secrets, tombstones and page tokens): give every process sharing this database "
                         "the same secrets.key")
    if made is not None and not settings.auth_token:
        print("tokensvc: created the bootstrap account; its auth token is shown only this once:\n"
              f"  TOKENSVC_ACCOUNT_SID={made.sid}\n  TOKENSVC_AUTH_TOKEN={made.auth_token}", flush=True)
