"""Pre-events (SPEC §10): `onUserAdd`, the provisioning policy, asked before a first encounter
writes anything. 200 proceeds (a JSON object body may set RoleSid, FriendlyName, Attributes,
validated as if the caller sent them); any other answer is 403 50056; no answer within 5 s per
attempt, after the service's pre_webhook_retry_count retries, is 504 50076. Concurrent first
encounters of one identity in this process ask once, including one that arrives after the
answer but before the user it allowed is committed (other replicas may ask again: the hook must
be idempotent)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any

from .. import errors, validation
from ..store.accounts import ForeignSecret
from ..store.outbox import Origin
from .http import Client, Unreachable
from .params import form, signature

log = logging.getLogger("tokensvc.webhooks")

ATTEMPT_SECONDS = 5.0
ANSWER_SECONDS = 1.0  # covers the write that follows the answer (a group commit, usually milliseconds)
MAX_RESPONSE_BYTES = 64 * 1024
_SETTABLE = {"RoleSid": "role_sid", "FriendlyName": "friendly_name", "Attributes": "attributes"}


@lru_cache(maxsize=1024)
def _filters(raw: str) -> frozenset[str]:
    return frozenset(json.loads(raw or "[]"))


def wants(service: Mapping[str, Any], event_type: str) -> bool:
    """Whether the service's pre-event of that name fires (a pre URL set, the name in its filters)."""
    return bool(service.get("pre_webhook_url")) and event_type in _filters(service.get("webhook_filters") or "[]")


_VALIDATE = {"role_sid": lambda v: v, "friendly_name": validation.friendly_name, "attributes": validation.attributes,
             "unique_name": validation.unique_name}
_CHANNEL_SETTABLE = {"FriendlyName": "friendly_name", "UniqueName": "unique_name", "Attributes": "attributes"}


def settable_fields(body: bytes, settable: Mapping[str, str]) -> dict[str, Any]:
    """The fields of `settable` (parameter → column) a 200's JSON object body sets, validated as
    the caller's would be."""
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    fields: dict[str, Any] = {}
    for param, column in settable.items():
        value = doc.get(param)
        if value is None:
            continue
        if column == "attributes" and not isinstance(value, str):
            value = json.dumps(value)
        if not isinstance(value, str):
            raise errors.invalid_param(param, "must be a string")
        fields[column] = _VALIDATE[column](value)
    return fields


def user_fields(body: bytes) -> dict[str, Any]:
    """What a 200's JSON object body sets, validated as if the caller sent it (RoleSid is checked
    against the service's roles where the user is written)."""
    try:
        doc = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    fields: dict[str, Any] = {}
    for param, column in _SETTABLE.items():
        if param not in doc or doc[param] is None:
            continue
        value = doc[param]
        if param == "Attributes" and not isinstance(value, str):
            value = json.dumps(value)
        if not isinstance(value, str):
            raise errors.invalid_param(param, "must be a string")
        fields[column] = (validation.attributes(value) if param == "Attributes" else
                          validation.friendly_name(value) if param == "FriendlyName" else value)
    return fields


class PreEvents:
    """Asks a service's pre-event hook, over the server process's pooled client."""

    def __init__(self, client: Callable[[], Client | None],
                 token: Callable[[str], Awaitable[str | None]], *, backoff_seconds: float = 0.2):
        self._client = client
        self._token = token
        self._backoff = backoff_seconds
        self._asking: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        # Answers that let a user be written, kept ANSWER_SECONDS: a first encounter arriving
        # between the answer and the commit of the user it allowed would otherwise ask again.
        self._answered: OrderedDict[tuple[str, str], tuple[dict[str, Any], float]] = OrderedDict()

    async def user_add(self, service: Mapping[str, Any], identity: str, origin: Origin,
                       given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The fields the hook sets for a new user of `identity` ({} when it sets none), or the
        TwilioError that refuses it; one question per identity at a time in this process."""
        key = (service["sid"], identity)
        asking = self._asking.get(key)
        if asking is not None:
            return dict(await asyncio.shield(asking))
        answered = self._answered.get(key)
        if answered is not None and answered[1] > time.monotonic():
            return dict(answered[0])
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asking[key] = future
        try:
            params = {"Identity": identity, "RoleSid": (given or {}).get("role_sid")
                      or service.get("default_service_role_sid") or ""}
            for column, param in (("friendly_name", "FriendlyName"), ("attributes", "Attributes")):
                if (given or {}).get(column) is not None:
                    params[param] = str((given or {})[column])
            fields = user_fields(await self.ask(service, "onUserAdd", params, origin))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(fields)
            self._remember(key, fields)
            return fields
        finally:
            del self._asking[key]

    def _remember(self, key: tuple[str, str], fields: dict[str, Any]) -> None:
        now = time.monotonic()
        while self._answered and next(iter(self._answered.values()))[1] <= now:
            self._answered.popitem(last=False)  # oldest first: they expire in the order they came
        self._answered.pop(key, None)
        self._answered[key] = (fields, now + ANSWER_SECONDS)

    async def action(self, service: Mapping[str, Any], event_type: str, resource: Mapping[str, str],
                     origin: Origin) -> dict[str, Any]:
        """A Chat pre-event (onChannelAdd, onMemberAdd, onUserUpdate, …) for a client-token action:
        the fields its 200 sets (channel: FriendlyName, UniqueName, Attributes; user and member:
        RoleSid, FriendlyName, Attributes), or the TwilioError that refuses it."""
        settable = _CHANNEL_SETTABLE if event_type.startswith("onChannel") else _SETTABLE
        return settable_fields(await self.ask(service, event_type, resource, origin), settable)

    async def ask(self, service: Mapping[str, Any], event_type: str, resource: Mapping[str, str],
                  origin: Origin) -> bytes:
        """The body of the hook's 200, after retries; 403 50056 or 504 50076 otherwise."""
        client = self._client()
        if client is None:
            raise errors.webhook_timeout()  # the app is stopping
        try:
            token = await self._token(service["account_sid"])
        except ForeignSecret:
            # A policy hook is a gate: asked unsigned, a receiver that does not check signatures
            # would let anyone through. Closed until the right secrets.key is in place.
            log.error("pre-event not sent: this process's secrets.key cannot open the auth token "
                      "copy of account %s (another deployment's key?); answering 504 50076", service["account_sid"])
            raise errors.webhook_timeout() from None
        timed_out = False
        for attempt in range(int(service.get("pre_webhook_retry_count") or 0) + 1):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            params = {"EventType": event_type, "AccountSid": service["account_sid"],
                      "InstanceSid": service["sid"], "Source": origin.source, "RetryCount": str(attempt),
                      **resource}
            if origin.source == "SDK" and origin.client_identity is not None:
                params["ClientIdentity"] = origin.client_identity
            outcome = await self._attempt(client, service, params, token)
            if isinstance(outcome, bytes):
                return outcome
            timed_out = outcome == "timeout"
            if isinstance(outcome, int) and outcome != 429 and outcome < 500:
                raise errors.webhook_rejected()
        raise errors.webhook_timeout() if timed_out else errors.webhook_rejected()

    async def _attempt(self, client: Client, service: Mapping[str, Any], params: dict[str, str],
                       token: str | None) -> bytes | int | str:
        url, method = service["pre_webhook_url"], service.get("webhook_method") or "POST"
        body: bytes | None = None
        if method == "GET":
            url = url + ("&" if "?" in url else "?") + form(params)
        headers = {"User-Agent": "tokensvc-webhooks"}
        if token is not None:
            headers["X-Twilio-Signature"] = signature(token, url, {} if method == "GET" else params)
        if method != "GET":
            body = form(params).encode()
        try:
            async with asyncio.timeout(ATTEMPT_SECONDS):
                status, answer = await client.request(method, url, headers, body, limit=MAX_RESPONSE_BYTES)
        except TimeoutError:
            return "timeout"
        except (Unreachable, ValueError):
            return "timeout"  # unreachable: no answer either
        return answer if status == 200 else status
