"""Push tables (SPEC §9): account credentials and the device bindings of users, on the metadata of
tables.py (store/__init__.py imports this module, so Alembic and schema comparisons see them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from .tables import _table


class Credential(SQLModel, table=True):
    """An apn / gcm / fcm credential of an account. Its secrets (certificate, private key, API key,
    server key) are one JSON document sealed with the SecretBox, bound to the row's SID: write-only."""

    __tablename__ = "credentials"
    __table_args__ = (Index("ix_credentials_account_id", "account_sid", "id"),)
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=Column(String(34), ForeignKey("accounts.sid", ondelete="CASCADE"),
                                              nullable=False))
    friendly_name: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    type: str = Field(sa_column=Column(String(8), nullable=False))
    sandbox: bool | None = Field(default=None, sa_column=Column(Boolean, nullable=True))  # apn only
    secrets_enc: str = Field(sa_column=Column(Text, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class Binding(SQLModel, table=True):
    """A device registration of a user. Unique per (user, endpoint, binding_type), which is SPEC §9's
    (service, identity, endpoint, binding_type): a user is its service's one user of an identity.
    The identity is read from the user row (no second copy of it to erase); the address (the device
    token) is sealed like a secret and never returned."""

    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("user_sid", "endpoint", "binding_type", name="uq_bindings_user_endpoint_type"),
        Index("ix_bindings_service_id", "service_sid", "id"),  # keyset paging of a service's bindings
        Index("ix_bindings_user_id", "user_sid", "id"),  # a user's bindings, and whether any is left
    )
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str = Field(sa_column=Column(String(34), ForeignKey("services.sid", ondelete="CASCADE"),
                                              nullable=False))
    user_sid: str = Field(sa_column=Column(String(34), ForeignKey("users.sid", ondelete="CASCADE"), nullable=False))
    credential_sid: str = Field(sa_column=Column(String(34), ForeignKey("credentials.sid", ondelete="CASCADE"),
                                                 nullable=False, index=True))
    endpoint: str = Field(sa_column=Column(String(256), nullable=False))
    binding_type: str = Field(sa_column=Column(String(8), nullable=False))
    address_enc: str = Field(sa_column=Column(Text, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


credentials: Table = _table(Credential)
bindings: Table = _table(Binding)
