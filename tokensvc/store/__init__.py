"""The store: tables, migrations and the SQL of each aggregate (users, services, roles, API keys,
accounts, tombstones, kicks; channels and memberships; push credentials and bindings). Nothing here
imports the API, the use cases or the connection layer."""

# Every table on the one metadata (Alembic's env, schema comparisons) whichever module is imported first.
from . import channel_tables as channel_tables
from . import outbox_tables as outbox_tables
from . import push_tables as push_tables
