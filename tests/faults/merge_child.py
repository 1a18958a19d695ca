"""Child process of the fault tests: merge scenes of the :func:`tests.helpers.scenario`, maybe pausing.

Usage, from the checkout:
``python -m tests.faults.merge_child URL APP AOI KEY... [--pause-at POINT] [--pause-s SECONDS]``.

With ``--pause-at``, a SQLAlchemy event listener, installed here only (the product code has no
hook), runs ``SELECT pg_sleep(...)`` on the merge's own connection, inside its transaction:
``commit`` pauses when SQLAlchemy is about to COMMIT (every write staged), any other value
``TABLE`` right after the first ``INSERT INTO inventory.TABLE``. The transaction then holds its
writes and the AOI lock while the parent finds it in ``pg_stat_activity`` (application_name =
APP) and kills this process. ``client_connection_check_interval`` makes the server notice the dead client
during the sleep and roll back at once, instead of when the sleep ends.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy import event

from db.engine import make_engine
from db.merge import merge_scene
from tests import helpers as h


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("app")
    parser.add_argument("aoi")
    parser.add_argument("keys", nargs="+")
    parser.add_argument("--pause-at", default=None)
    parser.add_argument("--pause-s", type=float, default=120.0)
    args = parser.parse_args(argv)

    engine = make_engine(
        args.url,
        connect_args={"application_name": args.app, "options": "-c client_connection_check_interval=100"},
    )

    def _sleep(dbapi_connection: Any) -> None:
        with dbapi_connection.cursor() as extra:  # same connection, same transaction
            extra.execute("SELECT pg_sleep(%s)", (args.pause_s,))

    if args.pause_at == "commit":

        @event.listens_for(engine, "commit")
        def _before_commit(conn: Any) -> None:
            _sleep(conn.connection.dbapi_connection)

    elif args.pause_at:
        marker = f"insert into inventory.{args.pause_at} "

        @event.listens_for(engine, "after_cursor_execute")
        def _after_insert(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            if statement.lstrip().lower().startswith(marker):
                _sleep(cursor.connection)

    # Keys of the scenario ("s…") and of its overlapping AOI ("e…"): see tests.helpers.scenes.
    scenes = {s.scene_key: s for s in (*h.scenario(args.aoi), *h.overlapping(args.aoi))}
    for key in args.keys:
        report = merge_scene(engine, scenes[key])
        print(f"merged {key} noop={report.noop}", flush=True)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
