"""Shared fixtures: configs composed from conf/ with every path pointed into a temp folder."""

from __future__ import annotations

import functools
import http.server
import sqlite3
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import compose_config


@pytest.fixture(scope="session")
def migrated_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store as MLflow leaves it on first open: every table made and migrated."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _mlflow_store(request):
    """A test's tmp_path/mlruns starts with a copy of the migrated store, as a user's second run
    finds it: MLflow's first open runs every migration, 2-3 s a store on a 2-core machine. The
    tests marked fresh_store (workers racing to create it, the first `make tune`) start empty."""
    if "tmp_path" not in request.fixturenames or request.node.get_closest_marker("fresh_store"):
        return
    store = request.getfixturevalue("tmp_path") / "mlruns" / "mlflow.db"
    store.parent.mkdir(exist_ok=True)
    source = sqlite3.connect(request.getfixturevalue("migrated_mlflow_store"))
    copy = sqlite3.connect(store)
    try:
        source.backup(copy)  # consistent even while the template's connections keep a WAL
    finally:
        source.close()
        copy.close()


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) of conf/train.yaml, or of `config` (tune, bench), on the CPU with the
    repo root (stores, outputs, data) in tmp_path."""

    def make(*overrides: str, config: str = "train") -> dict:
        root = (f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu")
        return compose_config(*root, *overrides, config_name=config)

    return make


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a temp folder; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 for the whole test session."""
    from tests.cluster import Postgres, postgres_bin

    if postgres_bin() is None:
        pytest.skip(
            "PostgreSQL server binaries not found: `make install` installs Debian's postgresql"
        )
    server = Postgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """An MLflow tracking server whose backend store is a database on that PostgreSQL."""
    from tests.cluster import MlflowServer

    backend = postgres.create_database("mlflow")
    server = MlflowServer(backend, tmp_path_factory.mktemp("mlflow") / "artifacts").wait()
    yield server
    server.stop()
