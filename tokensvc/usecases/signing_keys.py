"""The signing keys of the deployment (SPEC §4): list and rotate, as `tokensvc keys` does.

The keys directory serves every account of the deployment, so only its operator's account
(TOKENSVC_ACCOUNT_SID, else the only account of the database: store.accounts.served_account)
may rotate; every account may see the list, whose public halves /.well-known/jwks.json
publishes anyway. Key files are written off the event loop."""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread

from .. import errors, signing
from ..context import Context
from ..store.accounts import served_account

log = logging.getLogger("tokensvc.keys")


def _broken(what: str) -> errors.TwilioError:
    """The keys directory failed us: a 500 that names no path (the log does)."""
    return errors.TwilioError(500, 20500, f"The signing keys could not be {what}; the server log says why")


async def is_operator(c: Context, *, account_sid: str) -> bool:
    """Whether the account runs this deployment (and so may rotate its signing keys)."""
    configured = c.settings.account_sid
    return account_sid == (configured or await c.db.read(lambda conn: served_account(conn, None)))


async def list_signing_keys(c: Context) -> list[dict[str, Any]]:
    """kid, created (epoch seconds) and status (active | verifying | retired) of every key."""
    try:
        return await anyio.to_thread.run_sync(signing.key_listing, c.settings.keys_dir)
    except signing.KeyringError:
        log.exception("keys: the keys directory cannot be listed")
        raise _broken("listed") from None


async def rotate_signing_key(c: Context, *, account_sid: str) -> str:
    """A new key, made the signing one at once (`keys generate` then `keys activate`); the old
    one keeps verifying until retired, so no unexpired token breaks. Returns the new kid."""
    if not await is_operator(c, account_sid=account_sid):
        raise errors.forbidden("Only the deployment's own account may rotate its signing keys")
    keys_dir = c.settings.keys_dir

    def rotate() -> str:
        kid = signing.generate_key(keys_dir)
        signing.activate(keys_dir, kid)
        return kid

    try:
        kid = await anyio.to_thread.run_sync(rotate)
    except (signing.KeyringError, OSError):
        log.exception("keys: rotation failed")  # paths only, never key material
        raise _broken("rotated") from None
    c.keyring.request_reload()  # this process signs with it now; the others within a second
    return kid
