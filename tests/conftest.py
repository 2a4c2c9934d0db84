"""Shared fixtures: configs composed from conf/ with every path pointed into a temp folder."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("DROPTUNE_SHARED_DATA", REPO.parent / "shared" / "data"))

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir(),
    reason=f"canonical datasets not found at {SHARED_DATA} (set DROPTUNE_SHARED_DATA)",
)


def compose_config(*overrides: str, config_name: str = "train") -> dict:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) on CPU with the repo root (stores, outputs, data) in tmp_path."""

    def make(*overrides: str) -> dict:
        return compose_config(f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", *overrides)

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
    from cluster import Postgres, postgres_bin

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
    from cluster import MlflowServer

    backend = postgres.create_database("mlflow")
    server = MlflowServer(backend, tmp_path_factory.mktemp("mlflow") / "artifacts").wait()
    yield server
    server.stop()
