"""Tables of SPEC §8: channels, and memberships (a user's joined or invited place in a channel).

Members and invites share one table: a user is either a member of a channel or invited to it,
never both, and the unique constraint on (channel, user) says so in the database; a member add
replaces the invite row. A user's User Channels (status `joined` | `invited`) are then one keyset
list over one index. Counts (`channels.members_count`, `users.joined_channels_count`) are columns
changed in the transaction of every joined row's insert and delete (store/members.py).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from .tables import metadata  # noqa: F401  # the tables join models.py's metadata (one schema)


def _fk(target: str) -> Column:  # a cascading foreign key column, indexed by the table's own indexes
    return Column(String(34), ForeignKey(target, ondelete="CASCADE"), nullable=False)


class Channel(SQLModel, table=True):
    __tablename__ = "channels"
    __table_args__ = (
        # NULLs never collide: channels without a unique name are as many as they like.
        UniqueConstraint("service_sid", "unique_name", name="uq_channels_service_unique_name"),
        # Keyset paging by type: WHERE service_sid = ? AND type IN (…) AND id > ? ORDER BY id.
        Index("ix_channels_service_type_id", "service_sid", "type", "id"),
        # A deleted user's identity leaves created_by (SPEC §8): found by this index.
        Index("ix_channels_service_created_by", "service_sid", "created_by"),
    )
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    account_sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str = Field(sa_column=_fk("services.sid"))
    friendly_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    unique_name: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    attributes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    type: str = Field(sa_column=Column(String(8), nullable=False))
    created_by: str = Field(sa_column=Column(String(256), nullable=False))
    members_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    messages_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


class Membership(SQLModel, table=True):
    """A member (`status` joined, MB… SID) or a pending invite (`status` invited, IN… SID)."""

    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("channel_sid", "user_sid", name="uq_memberships_channel_user"),
        # A channel's members or invites in creation order, and by identity.
        Index("ix_memberships_channel_status_id", "channel_sid", "status", "id"),
        Index("ix_memberships_channel_identity", "channel_sid", "identity"),
        # A user's User Channels in creation order.
        Index("ix_memberships_user_id", "user_sid", "id"),
        # Invites a deleted user created lose its identity (SPEC §8): found by this index.
        Index("ix_memberships_service_created_by", "service_sid", "created_by"),
    )
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    sid: str = Field(sa_column=Column(String(34), unique=True, nullable=False))
    status: str = Field(sa_column=Column(String(8), nullable=False))
    account_sid: str = Field(sa_column=Column(String(34), nullable=False))
    service_sid: str = Field(sa_column=Column(String(34), nullable=False))
    channel_sid: str = Field(sa_column=_fk("channels.sid"))
    # CASCADE is the backstop: deleting a user removes its rows itself first, to fix the counts.
    user_sid: str = Field(sa_column=_fk("users.sid"))
    identity: str = Field(sa_column=Column(String(256), nullable=False))
    # Like users.role_sid (migration 0003): a role in use cannot be deleted, in the database too.
    role_sid: str = Field(sa_column=Column(String(34), ForeignKey("roles.sid", name="fk_memberships_role_sid"),
                                           nullable=False, index=True))
    attributes: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_consumed_message_index: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    last_consumption_timestamp: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    notification_level: str = Field(default="default", sa_column=Column(String(8), nullable=False))
    created_by: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))  # invites
    date_created: int = Field(sa_column=Column(BigInteger, nullable=False))
    date_updated: int = Field(sa_column=Column(BigInteger, nullable=False))


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined]  # set by SQLModel's metaclass for table=True


channels = _table(Channel)
memberships = _table(Membership)
