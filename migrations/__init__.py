"""Alembic revisions of the inventory schema (``versions/``) and their environment (``env.py``).

Frozen history: a revision never changes once released and spells its DDL out literally (it never
imports the live declarations such as :mod:`db.attributes`); it may import :mod:`db.schema` for
the schema and role names only. Run through :mod:`db.migrate`.
"""
