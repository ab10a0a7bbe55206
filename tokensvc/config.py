"""Settings of SPEC §6, built once from the environment and passed down."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting in the environment has a value tokensvc cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./tokensvc.db"
    keys_dir: Path = field(default_factory=lambda: Path("./keys"))
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    # TOKENSVC_ISSUER: the `iss` of the tokens tokensvc signs and the `issuer` of its OIDC
    # discovery document; `issuer` below gives the default.
    token_issuer: str | None = None
    account_sid: str | None = None
    auth_token: str | None = None
    default_ttl: int = 3600
    max_ttl: int = 86400
    # Request bodies larger than this are refused with 413 before they are read whole.
    max_body_bytes: int = 64 * 1024
    # Failed Basic-auth attempts allowed per client address / account SID per window.
    auth_fail_limit: int = 20
    auth_fail_window: int = 60
    # Tokens an account may have issued per second through POST /Tokens (0: unlimited).
    token_rate_limit: int = 0
    # How long credentials, services and API keys may be served from a process cache.
    cache_seconds: float = 1.0
    # A connection whose heartbeat is older than this is dead (SPEC §5: offline within 60 s).
    presence_timeout: int = 45
    heartbeat_interval: int = 15
    # Seconds a webhook dispatcher's claim holds its outbox rows: a crashed process's rows are
    # delivered by another (or by it, restarted) after this (SPEC §10).
    webhook_lease: int = 60
    # SQLite synchronous mode; FULL makes every commit durable across power loss.
    sqlite_synchronous: str = "FULL"
    log_level: str = "info"
    # The request head (request line and headers): refused with 431 above these sizes, and the
    # connection closed when its head (or its body) is not complete within these seconds.
    max_head_bytes: int = 64 * 1024
    max_header_line_bytes: int = 16 * 1024
    head_timeout: int = 10
    body_timeout: int = 30
    # Peers (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto are believed;
    # none by default, so the client address of the limits is always the TCP peer.
    trusted_proxies: tuple[str, ...] = ()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def issuer(self) -> str:
        """The issuer of tokensvc-signed tokens: TOKENSVC_ISSUER, else TOKENSVC_PUBLIC_URL, else the
        literal `tokensvc` (what every earlier version wrote). A request's own base URL cannot
        serve: `tokensvc token` mints without one, and a token's `iss` must not follow a Host header."""
        return self.token_issuer or self.public_url or "tokensvc"

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _networks(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, normalized ("10.0.0.0/8", "::1")."""
    raw = environ.get(name) or ""
    networks = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False) if "/" in item
                                else ipaddress.ip_address(item)))
        except ValueError:
            raise ConfigError(f"{name} must list IP addresses or networks (CIDR), got {item!r}") from None
    return tuple(networks)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (SPEC §6); raises ConfigError for unusable values."""
    env = os.environ if environ is None else environ
    public_url = env.get("TOKENSVC_PUBLIC_URL") or None
    if public_url:
        public_url = public_url.rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise ConfigError("TOKENSVC_PUBLIC_URL must start with http:// or https://")
    issuer = env.get("TOKENSVC_ISSUER") or None
    if issuer is not None:
        parts = urlsplit(issuer)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment or "#" in issuer:
            # OpenID Connect Discovery 1.0 §3: a URL (https in production) without query or fragment
            raise ConfigError("TOKENSVC_ISSUER must be an http:// or https:// URL without a query or fragment")
    default_ttl = _int(env, "TOKENSVC_DEFAULT_TTL", 3600, minimum=1)
    max_ttl = _int(env, "TOKENSVC_MAX_TTL", 86400, minimum=1)
    if default_ttl > max_ttl:
        raise ConfigError("TOKENSVC_DEFAULT_TTL must not exceed TOKENSVC_MAX_TTL")
    sync = env.get("TOKENSVC_SQLITE_SYNCHRONOUS", "FULL").upper()
    if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ConfigError("TOKENSVC_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")
    max_head_bytes = _int(env, "TOKENSVC_MAX_HEAD_BYTES", 64 * 1024, minimum=4096)
    max_header_line_bytes = _int(env, "TOKENSVC_MAX_HEADER_LINE_BYTES", 16 * 1024, minimum=1024)
    if max_header_line_bytes > max_head_bytes:
        raise ConfigError("TOKENSVC_MAX_HEADER_LINE_BYTES must not exceed TOKENSVC_MAX_HEAD_BYTES")
    return Settings(
        database_url=env.get("TOKENSVC_DATABASE_URL") or "sqlite:///./tokensvc.db",
        keys_dir=Path(env.get("TOKENSVC_KEYS_DIR") or "./keys"),
        host=env.get("TOKENSVC_HOST") or "127.0.0.1",
        port=_int(env, "TOKENSVC_PORT", 8080, minimum=0),
        public_url=public_url,
        token_issuer=issuer,
        account_sid=env.get("TOKENSVC_ACCOUNT_SID") or None,
        auth_token=env.get("TOKENSVC_AUTH_TOKEN") or None,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        max_body_bytes=_int(env, "TOKENSVC_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
        auth_fail_limit=_int(env, "TOKENSVC_AUTH_FAIL_LIMIT", 20, minimum=1),
        auth_fail_window=_int(env, "TOKENSVC_AUTH_FAIL_WINDOW", 60, minimum=1),
        token_rate_limit=_int(env, "TOKENSVC_TOKEN_RATE_LIMIT", 0),
        presence_timeout=_int(env, "TOKENSVC_PRESENCE_TIMEOUT", 45, minimum=2),
        heartbeat_interval=_int(env, "TOKENSVC_HEARTBEAT_INTERVAL", 15, minimum=1),
        webhook_lease=_int(env, "TOKENSVC_WEBHOOK_LEASE", 60, minimum=1),
        sqlite_synchronous=sync,
        log_level=(env.get("TOKENSVC_LOG_LEVEL") or "info").lower(),
        max_head_bytes=max_head_bytes,
        max_header_line_bytes=max_header_line_bytes,
        head_timeout=_int(env, "TOKENSVC_HEAD_TIMEOUT", 10, minimum=1),
        body_timeout=_int(env, "TOKENSVC_BODY_TIMEOUT", 30, minimum=1),
        trusted_proxies=_networks(env, "TOKENSVC_TRUSTED_PROXIES"),
    )
