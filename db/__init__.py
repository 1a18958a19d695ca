"""The inventory database layer: PostGIS schema, merge, queries, import, ledger.

What lives here, by concept:

* :mod:`db.attributes`: the one declaration of the lake attributes (names, SQL types, units);
* :mod:`db.records`: the value objects handed to the merge (outlines in UTM, with their EPSG);
* :mod:`db.geometry`: UTM zones, repair to a valid MultiPolygon, projection (pure);
* :mod:`db.identity`: which lake a polygon continues (pure);
* :mod:`db.history`: a lake's versions derived from its observations (pure);
* :mod:`db.merge`: one scene into the inventory in one transaction (package);
* :mod:`db.schema` (tables), :mod:`db.migrate` (Alembic), :mod:`db.engine`, :mod:`db.local_cluster`;
* :mod:`db.queries` (reads), :mod:`db.map_layers` (what a map draws), :mod:`db.importer` (inventory
  files), :mod:`db.ledger` (scene ledger: acquisitions per AOI, merged scene keys), :mod:`db.runs`
  (one ``ingest_run`` row per flow run, under a lease), :mod:`db.windows` (what the rolling window
  reads), :mod:`db.logins` (the writer-login check).

May import :mod:`core` and third-party packages; never ``tasks``, ``flows`` or ``models`` (they
import this layer). The pure modules (attributes, records, geometry, identity, history) do no I/O.
"""
