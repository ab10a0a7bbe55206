"""WebSocket client connections and presence (SPEC §5).

A client opens `GET /v2/Connect`, presents its access token (the `X-Twilio-Token` header or a
first `{"type": "authenticate", "token": …}` frame) and stays connected until the token expires,
the client leaves, or its User is deleted. Each session is one task with no helper tasks: its
only timer is the `asyncio.timeout` around its pending `receive()`, rescheduled to wake it for
token-expiry events or when another part of the process needs it closed.

Presence (the `connections` rows that make `is_online` true on every process) is written by
presence.Presence on the sessions' behalf, which knows a session only by its id.

A session lives only as long as its user, its service and, for a Twilio-format (HS256) token,
the API key that signed it. The process deleting one closes its own sessions at once (after the
commit, usecases/effects.apply); the deletion's transaction also wrote a kick (kicks.py), which
every Hub holding sessions reads every KICK_POLL seconds, so a deletion through any replica
closes its sessions everywhere within about a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import errors, urls
from .api import push as push_api
from .api.render import user_to_json
from .db import now
from .frames import MAX_FRAME, error_frame, frame, parse_frame
from .presence import Presence, Stopping
from .store import kicks, tombstones
from .tokens import Verified
from .usecases.effects import apply
from .usecases.events import UserAdded
from .usecases.users import provision_user
from .webhooks.pre import wants as pre_wants

log = logging.getLogger("tokensvc.connect")

AUTH_TIMEOUT = 10.0  # seconds a client has to present its token
WARN_BEFORE = 180  # tokenAboutToExpire this many seconds before exp
CLOSE_TOKEN = 4001  # bad or expired token
CLOSE_DELETED = 4003  # the User was deleted
CLOSE_ERROR = 1011
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the database was busy or unavailable
CLOSE_GOING_AWAY = 1001
KICK_POLL = 0.5  # seconds between reads of new kicks, while this process has sessions
TOMBSTONE_SWEEP = 60.0  # seconds between sweeps of expired tombstones and old kicks
GONE_KEY_MEMORY = 60.0  # seconds a deleted API key is remembered, past any cached copy of it


class Session:
    """One client connection; slots keep idle connections small (bench/connect.py)."""

    __slots__ = ("ws", "id", "user_sid", "service_sid", "identity", "expires_at", "warned", "close_code",
                 "close_error", "waker", "key_sid", "token")

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.id = "CN" + uuid.uuid4().hex  # the connection id presence knows it by
        self.user_sid: str | None = None  # once joined: registerPush registers for this user
        self.service_sid: str | None = None
        self.identity: str | None = None
        self.expires_at = 0
        self.warned = False
        self.close_code: int | None = None
        self.close_error: errors.TwilioError | None = None  # sent as an error frame before the close
        self.waker: asyncio.Timeout | None = None
        self.key_sid: str | None = None  # the API key that signed the session's HS256 token
        self.token: Verified | None = None  # its current token: registerPush's grant defaults (SPEC §9)

    def kick(self, code: int, err: errors.TwilioError | None = None) -> None:
        """Ask the session's task to close with `code` as soon as it is scheduled."""
        if self.close_code is None:
            self.close_code = code
            self.close_error = err
        if self.waker is not None and self.waker.expired() is False:
            self.waker.reschedule(asyncio.get_running_loop().time())


def _node_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _key_gone() -> errors.TwilioError:
    return errors.invalid_token("Access Token signed by an unknown or deleted API key")


class _Closed(Exception):
    """The session is over (closed by us or by the client)."""


class Hub:
    """The process's open client connections and their presence rows."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.node = _node_id()
        self.sessions: dict[str, Session] = {}  # by connection id
        self.by_key: dict[str, set[Session]] = {}  # sessions of HS256 tokens, by signing API key
        self._busy = asyncio.Event()  # a session arrived: read kicks while there are any
        self._kicks: kicks.Reader | None = None
        # API keys deleted lately (loop time): a token verified from a copy of the key cached a
        # moment before (cache_seconds) must not open a session that outlives the kick.
        self._gone_keys: dict[str, float] = {}
        self._watcher: asyncio.Task | None = None
        self.graves = ctx.tombstones
        writes = ctx.metrics.presence_writes
        self.presence = Presence(ctx.db, node=self.node, timeout=ctx.settings.presence_timeout,
                                 interval=ctx.settings.heartbeat_interval, writes=writes, on_gone=self._gone,
                                 graves=self.graves)

    async def start(self) -> None:
        self.presence.start()
        try:  # kicks from now on; older ones concern no session of this process
            self._kicks = kicks.Reader(await self.ctx.db.read(kicks.latest))
        except Exception as exc:  # the database may be away for a moment: the watcher starts it
            log.warning("could not read the kicks' position (%s); retrying", type(exc).__name__)
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="tokensvc-hub-watch")

    async def stop(self) -> None:
        """Close every session (1001 going away), then drop this process's rows."""
        for session in list(self.sessions.values()):
            session.kick(CLOSE_GOING_AWAY)
        deadline = time.monotonic() + 2
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
            self._watcher = None
        await self.presence.stop()

    def _gone(self, cid: str) -> None:
        """Presence's on_gone: the session's user or service is gone (4003)."""
        session = self.sessions.get(cid)
        if session is not None:
            session.kick(CLOSE_DELETED)

    async def user_deleted(self, service_sid: str, user_sid: str) -> None:
        """Close this process's sessions of a deleted user (4003); its rows went with it."""
        self.presence.forget_user(service_sid, user_sid)

    async def service_deleted(self, service_sid: str) -> None:
        """Close this process's sessions in a deleted service (4003); its users went with it."""
        self.presence.forget_service(service_sid)

    async def key_deleted(self, key_sid: str) -> None:
        """Close this process's sessions of tokens the deleted API key signed (20101, 4001)."""
        t = asyncio.get_running_loop().time()
        self._gone_keys = {k: at for k, at in self._gone_keys.items() if t - at < GONE_KEY_MEMORY}
        self._gone_keys[key_sid] = t
        for session in list(self.by_key.pop(key_sid, ())):
            session.kick(CLOSE_TOKEN, _key_gone())

    def _track_key(self, session: Session, key_sid: str | None) -> None:
        """Index the session under the API key of its (current) token; None for ES256 tokens."""
        if session.key_sid == key_sid:
            return
        self._untrack_key(session)
        session.key_sid = key_sid
        if key_sid is not None:
            self.by_key.setdefault(key_sid, set()).add(session)
            if key_sid in self._gone_keys:
                session.kick(CLOSE_TOKEN, _key_gone())

    def _untrack_key(self, session: Session) -> None:
        if session.key_sid is None:
            return
        held = self.by_key.get(session.key_sid)
        if held is not None:
            held.discard(session)
            if not held:
                del self.by_key[session.key_sid]
        session.key_sid = None

    async def _watch(self) -> None:
        """While sessions are open, every KICK_POLL seconds: act on new kicks (deletions through
        any replica, this one included). Now and then: sweep expired tombstones and old kicks."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + TOMBSTONE_SWEEP
        while True:
            try:
                if not self.sessions:
                    self._busy.clear()
                    try:
                        async with asyncio.timeout_at(next_sweep):
                            await self._busy.wait()
                    except TimeoutError:
                        pass
                if self.sessions:
                    await asyncio.sleep(KICK_POLL)
                    await self._read_kicks()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + TOMBSTONE_SWEEP
                    await self.ctx.db.write(tombstones.sweep, now())
                    await self.ctx.db.write(kicks.prune, now() - kicks.KEEP)
            except Exception as exc:  # the database may be away for a moment: try again later
                log.warning("kick read or sweep failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(KICK_POLL)

    async def _read_kicks(self) -> None:
        if self._kicks is None:
            self._kicks = kicks.Reader(await self.ctx.db.read(kicks.latest))
            return
        for kick in await self._kicks.poll(self.ctx.db):
            if kick.kind == kicks.USER and kick.service_sid is not None:
                await self.user_deleted(kick.service_sid, kick.sid)
            elif kick.kind == kicks.SERVICE:
                self.ctx.auth.forget()  # new sessions see it gone at once, not within cache_seconds
                await self.service_deleted(kick.sid)
            elif kick.kind == kicks.API_KEY:
                self.ctx.auth.forget()
                await self.key_deleted(kick.sid)

    async def serve(self, websocket: WebSocket) -> None:
        """One client connection, from handshake to close."""
        await websocket.accept()
        session = Session(websocket)
        self.sessions[session.id] = session
        self._busy.set()
        gauge = self.ctx.metrics.open_connections
        gauge.inc()
        try:
            # Setup runs in its own frame so its locals (token, claims, user) are freed before the
            # session idles: they would otherwise stay alive for the life of the connection.
            if await self._open(session):
                await self._loop(session)
        except (_Closed, WebSocketDisconnect):
            pass
        except Exception:
            log.exception("client connection failed")
            await self._close(session, CLOSE_ERROR)
        finally:
            gauge.dec()
            del self.sessions[session.id]
            self._untrack_key(session)
            if session.service_sid is not None:  # it got as far as joining
                self.presence.leave(session.id)

    # -- one session --

    async def _send(self, session: Session, text: str) -> None:
        try:
            await session.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError):
            raise _Closed from None

    async def _close(self, session: Session, code: int, err: errors.TwilioError | None = None) -> None:
        try:
            if err is not None:
                await session.ws.send_text(error_frame(err))
            await session.ws.close(code)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def _receive(self, session: Session, deadline: float) -> Mapping[str, Any] | None:
        """The next message, or None when `deadline` (loop time) passed or the session was kicked."""
        if session.close_code is not None:
            return None
        try:
            async with asyncio.timeout_at(deadline) as waker:
                session.waker = waker
                message = await session.ws.receive()
        except TimeoutError:
            return None
        finally:
            session.waker = None
        if message["type"] == "websocket.disconnect":
            raise _Closed
        return message

    async def _open(self, session: Session) -> bool:
        """Authenticate, provision and record presence; True when the session is established."""
        ws = session.ws
        loop = asyncio.get_running_loop()
        token = ws.headers.get("x-twilio-token")
        if token is None:
            message = await self._receive(session, loop.time() + AUTH_TIMEOUT)
            if message is None:
                if session.close_code is not None:
                    return await self._refuse(session, session.close_code, session.close_error)
                return await self._refuse(session, CLOSE_TOKEN, errors.invalid_token(
                    f"No access token received within {AUTH_TIMEOUT:g} seconds"))
            data = parse_frame(message)
            token = data.get("token") if isinstance(data, dict) and data.get("type") == "authenticate" else None
            if not isinstance(token, str):
                return await self._refuse(session, CLOSE_TOKEN, errors.invalid_token(
                    'Expected {"type": "authenticate", "token": "<access token>"} as the first frame'))
        try:
            verified = await self.ctx.auth.verify_token(token)
        except errors.TwilioError as exc:
            return await self._refuse(session, CLOSE_TOKEN, exc)
        svc = await self.ctx.auth.service(verified.service_sid)
        if svc is None:
            return await self._refuse(session, CLOSE_TOKEN, errors.invalid_token(
                "Access Token is for a service that does not exist"))
        session.service_sid = verified.service_sid
        session.identity = verified.identity
        session.expires_at = verified.expires_at
        session.token = verified
        self._track_key(session, verified.key_sid)
        try:
            if pre_wants(svc, "onUserAdd"):  # the provisioning policy answers before presence writes
                _, events = await provision_user(self.ctx, service=svc, identity=verified.identity,
                                                 token=verified)
                await apply(self.ctx, events)
            user, created = await self.presence.join(session.id, svc, verified.identity,
                                                     self.graves.issued_at(verified))
        except errors.TwilioError as exc:
            # 401: the token predates the identity's deletion; 404/409: the user or its service
            # went away while we joined (a race with a delete, SPEC §5's 4003).
            # A busy database (503) is no verdict on the user: the client may retry.
            # An onUserAdd hook's refusal (403 50056, 504 50076) closes as a refused token.
            code = (CLOSE_TOKEN if exc.status in (401, 403) or exc.code == 50076 else
                    CLOSE_TRY_AGAIN if exc.status >= 500 else CLOSE_DELETED)
            return await self._refuse(session, code, exc)
        except Stopping:
            return await self._refuse(session, CLOSE_GOING_AWAY)
        session.user_sid = user["sid"]
        if created:
            await apply(self.ctx, [UserAdded(user)])
        online = True if svc["reachability_enabled"] else None
        await self._send(session, frame("connected", user=user_to_json(user, self._base_url(ws), is_online=online)))
        return True

    async def _refuse(self, session: Session, code: int, err: errors.TwilioError | None = None) -> bool:
        await self._close(session, code, err)
        return False

    async def _loop(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if session.close_code is not None:
                return await self._close(session, session.close_code, session.close_error)
            left = session.expires_at - time.time()
            if left <= 0:
                await self._send(session, frame("tokenExpired"))
                return await self._close(session, CLOSE_TOKEN)
            if not session.warned and left <= WARN_BEFORE:
                session.warned = True
                await self._send(session, frame("tokenAboutToExpire", expires_in=max(0, int(left))))
                continue
            wake_in = left if session.warned else left - WARN_BEFORE
            message = await self._receive(session, loop.time() + wake_in)
            if message is not None:
                await self._handle(session, message)

    async def _handle(self, session: Session, message: Mapping[str, Any]) -> None:
        data = parse_frame(message)
        if data is None:
            return await self._send(session, error_frame(errors.invalid_frame("Frames must be JSON objects of at most "
                                                                     f"{MAX_FRAME} bytes sent as text")))
        kind = data.get("type")
        if kind == "registerPush" and session.user_sid is not None and session.token is not None:
            try:
                registered = await push_api.register_frame(
                    self.ctx, service_sid=session.service_sid or "", user_sid=session.user_sid, token=session.token,
                    data=data, base=self._base_url(session.ws))
            except errors.TwilioError as exc:
                return await self._send(session, error_frame(exc))
            return await self._send(session, frame("pushRegistered", **registered))
        if kind != "updateToken":
            return await self._send(session, error_frame(errors.invalid_frame("Unknown frame type")))
        token = data.get("token")
        if not isinstance(token, str):
            return await self._send(session, error_frame(errors.invalid_frame("updateToken needs a token")))
        try:
            verified = await self.ctx.auth.verify_token(token)
        except errors.TwilioError as exc:
            await self._close(session, CLOSE_TOKEN, exc)
            raise _Closed from None
        if verified.identity != session.identity or verified.service_sid != session.service_sid:
            return await self._send(session, error_frame(errors.forbidden(
                "updateToken needs a token for the same identity and service")))
        session.expires_at = verified.expires_at
        session.token = verified
        session.warned = False
        self._track_key(session, verified.key_sid)
        await self._send(session, frame("tokenUpdated"))

    def _base_url(self, ws: WebSocket) -> str:
        """TOKENSVC_PUBLIC_URL, else the handshake's scheme and Host (urls.base_url)."""
        return urls.base_url(self.ctx.settings, ws.scope, ws.headers.get("host"))

