"""What the embedded stores cost a study, and how write-ahead logging cuts it.

The embedded default's SQLite files (Optuna's study, MLflow's runs) run in write-ahead-log mode.
A fused study writes a report per member per epoch and several rows per trial run: in SQLite's
default mode each commit rewrites a rollback journal and syncs twice (~2.1 ms per Optuna report
on a local disk), in WAL mode it appends to the log (~0.85 ms), and readers such as `make ui` no
longer block the writers. Committed data survives a killed process; with synchronous=NORMAL an
operating-system crash or power loss may roll back the last commits. WAL needs the processes on
one machine (SQLite on a shared filesystem is unsafe anyway: clusters use PostgreSQL).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

log = logging.getLogger("droptune")


def _write_ahead_log(dbapi_connection: Any, connection_record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent: the file stays in WAL mode
        cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
    except sqlite3.OperationalError as error:  # locked past the timeout: the default mode works too
        log.warning("SQLite store left in its journal mode: %s", error)
    finally:
        cursor.close()


def sqlite_write_ahead_log() -> None:
    """Every SQLite connection SQLAlchemy opens from now on uses WAL (idempotent)."""
    if not event.contains(Engine, "connect", _write_ahead_log):
        event.listen(Engine, "connect", _write_ahead_log)
