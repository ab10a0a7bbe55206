"""The webhook outbox (SPEC §10): a post-event is a row written in the transaction of its change,
delivered and deleted by any process's dispatcher (tokensvc/webhooks/dispatcher.py); a row given
up on stays `failed` for 7 days, for inspection. On the metadata of tables.py."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from .tables import _table


class OutboxRow(SQLModel, table=True):
    """`due_at` (epoch ms) is also the claim's lease: a claimer moves it ahead, so the rows of a
    claimer that crashed become due again. `data` is the resource's row as JSON; the parameters
    are rendered from it at delivery. `url`, `method` and `retries` are the service's settings
    when the change committed."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "due_at"), Index("ix_outbox_resource", "resource_sid", "id"),
                      {"sqlite_autoincrement": True})
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    token: str = Field(sa_column=Column(String(64), nullable=False, unique=True))  # I-Twilio-Idempotency-Token
    account_sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str = Field(sa_column=Column(String(34), nullable=False))
    resource_sid: str = Field(sa_column=Column(String(34), nullable=False))
    event_type: str = Field(sa_column=Column(String(32), nullable=False))
    url: str = Field(sa_column=Column(Text, nullable=False))
    method: str = Field(sa_column=Column(String(4), nullable=False))
    retries: int = Field(sa_column=Column(Integer, nullable=False))
    source: str = Field(sa_column=Column(String(3), nullable=False))
    client_identity: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    data: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(sa_column=Column(String(8), nullable=False))  # pending | failed
    due_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))


outbox = _table(OutboxRow)
