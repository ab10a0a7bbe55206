"""The store: tables, migrations and the SQL of each aggregate (users, services, roles, API keys,
accounts, tombstones). Nothing here imports the API, the use cases or the connection layer."""
