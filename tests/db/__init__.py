"""The inventory on a real PostGIS: schema, merge, history, queries, roles, migrations, import."""
