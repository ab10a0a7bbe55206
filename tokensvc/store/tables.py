"""SQLModel tables. Hot paths use SQLAlchemy Core statements on these tables (`Model.__table__`).

Every table has an integer `id` that only grows: lists page by keyset on it, which is creation
order. Dates are whole epoch seconds (the API shows whole seconds anyway).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata


def _fk(target: str, *, index: bool = True) -> Column:  # a cascading foreign key column
    return Column(String(34), ForeignKey(target, ondelete="CASCADE"), nullable=False, index=index)


def _role_fk(name: str, *, use_alter: bool = False) -> ForeignKey:
    """A reference to a role the database refuses to leave dangling (migration 0003). NO ACTION,
    not RESTRICT: it is checked at the end of the statement, so deleting a service, which
    cascades to its roles and users (and takes the service row itself), passes."""
    return ForeignKey("roles.sid", name=name, use_alter=use_alter)


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    friendly_name: str = Field(sa_column=Column(String(256), nullable=False))
    # SHA-256 (hex) of the auth token: the token is 32 random bytes, so a fast hash suffices.
    auth_token_hash: str = Field(sa_column=Column(String(64), nullable=False))
    # The token itself, AES-GCM sealed (crypto.SecretBox), to sign webhooks (SPEC §10): set for
    # accounts created or rotated since migration 0009 and for the bootstrap account.
    auth_token_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # HMAC of a fixed text under a key derived from keys/secrets.key, recorded by the first
    # `tokensvc serve` for its bootstrap account: a replica with another secrets.key refuses to start.
    key_check: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=_fk("accounts.sid"))
    friendly_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False))
    # The secret itself is needed to verify HS256 tokens it signed: stored AES-GCM encrypted.
    secret_enc: str = Field(sa_column=Column(Text, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class Service(SQLModel, table=True):
    __tablename__ = "services"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=_fk("accounts.sid"))
    friendly_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    default_service_role_sid: str | None = Field(default=None, sa_column=Column(
        String(34), _role_fk("fk_services_default_service_role_sid", use_alter=True)))
    default_channel_role_sid: str | None = Field(default=None, sa_column=Column(
        String(34), _role_fk("fk_services_default_channel_role_sid", use_alter=True)))
    default_channel_creator_role_sid: str | None = Field(default=None, sa_column=Column(
        String(34), _role_fk("fk_services_default_channel_creator_role_sid", use_alter=True)))
    read_status_enabled: bool = True
    reachability_enabled: bool = False
    typing_indicator_timeout: int = 5
    consumption_report_interval: int = 10
    pre_webhook_url: str | None = Field(default=None, sa_column=Column(Text))
    post_webhook_url: str | None = Field(default=None, sa_column=Column(Text))
    webhook_method: str = Field(default="POST", sa_column=Column(String(8), nullable=False))
    pre_webhook_retry_count: int = 0
    post_webhook_retry_count: int = 0
    # JSON documents kept as text: webhook_filters (list), limits, notifications, media (objects).
    webhook_filters: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    limits: str = Field(sa_column=Column(Text, nullable=False))
    notifications: str = Field(sa_column=Column(Text, nullable=False))
    media: str = Field(sa_column=Column(Text, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class Role(SQLModel, table=True):
    __tablename__ = "roles"
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str = Field(sa_column=_fk("services.sid"))
    friendly_name: str = Field(sa_column=Column(String(256), nullable=False))
    type: str = Field(sa_column=Column(String(16), nullable=False))
    permissions: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("service_sid", "identity", name="uq_users_service_identity"),
        # Keyset paging: WHERE service_sid = ? AND id > ? ORDER BY id.
        Index("ix_users_service_id", "service_sid", "id"),
        # The list filters of SPEC §11 (store/user_filters.list_users, migration 0010), each one index
        # range: RoleSid in creation order (a role belongs to one service; deleting a role asks
        # whether any user holds it), UpdatedAfter in (date_updated, sid) order. IdentityPrefix
        # ranges over uq_users_service_identity, in byte order (the column's collation).
        Index("ix_users_role_id", "role_sid", "id"),
        Index("ix_users_service_updated", "service_sid", "date_updated", "sid"),
    )
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str = Field(sa_column=_fk("services.sid", index=False))
    # Indexed (ix_users_role_id): deleting a role asks whether any user still holds it, and so
    # does the foreign key's check.
    role_sid: str = Field(sa_column=Column(String(34), _role_fk("fk_users_role_sid"), nullable=False))
    # PostgreSQL: collation "C" (byte order, as SQLite's BINARY), so an IdentityPrefix is one
    # exact range of the unique index whatever the database's locale (en_US would put "B"
    # between "a" and "b"). Equality, and so uniqueness, is byte equality under any collation.
    identity: str = Field(sa_column=Column(String(256).with_variant(String(256, collation="C"), "postgresql"),
                                           nullable=False))
    attributes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    friendly_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    joined_channels_count: int = 0
    # Set once the user has had a client connection: is_online is null before, a boolean after.
    was_online: bool = False
    # Push (SPEC §9, store/push.py): null until the first binding, then whether one exists; kept
    # in the transaction of every binding insert and delete, so a fetch reads it for free.
    notifiable: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class Connection(SQLModel, table=True):
    """A live client connection (SPEC §5); `heartbeat_at` is renewed while it stays open."""

    __tablename__ = "connections"
    __table_args__ = (Index("ix_connections_user_heartbeat", "user_sid", "heartbeat_at"),)
    id: str = Field(sa_column=Column(String(34), primary_key=True))
    user_sid: str = Field(sa_column=Column(String(34), ForeignKey("users.sid", ondelete="CASCADE"), nullable=False))
    service_sid: str = Field(sa_column=Column(String(34), nullable=False))
    node: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    heartbeat_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))


class Tombstone(SQLModel, table=True):
    """A deleted identity, kept until every token issued before its deletion has expired (SPEC
    §11): `digest` is an HMAC of service SID and identity (tombstones.py), never the identity."""

    __tablename__ = "tombstones"
    digest: str = Field(sa_column=Column(String(64), primary_key=True))
    deleted_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # deleted_at + max_ttl + clock skew: swept after this
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class Kick(SQLModel, table=True):
    """A request to every process to close the client sessions that stand on something changed
    elsewhere (kicks.py): a deleted user, service or API key, and next a changed role or revoked
    tokens; `kind` says which, `sid` names it. Readers follow `id`, which never goes back
    (AUTOINCREMENT on SQLite: ids of pruned rows are not reused); pruned by `date_created`."""

    __tablename__ = "kicks"
    __table_args__ = {"sqlite_autoincrement": True}
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str | None = Field(default=None, sa_column=Column(String(34), nullable=True))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class ConsoleSignout(SQLModel, table=True):
    """A console session its admin signed out of (console/session.py): the SHA-256 of the session's
    nonce, so a copy of its cookie stops working on every replica too. Kept until the session would
    have ended anyway (`expires_at`, epoch seconds), then purged."""

    __tablename__ = "console_signouts"
    nonce_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


def _table(model: type[SQLModel]) -> Table:
    """The Core table of a table=True model."""
    return model.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass for table=True; undeclared


accounts = _table(Account)
api_keys = _table(ApiKey)
services = _table(Service)
roles = _table(Role)
users = _table(User)
connections = _table(Connection)
tombstones = _table(Tombstone)
kicks = _table(Kick)
console_signouts = _table(ConsoleSignout)
