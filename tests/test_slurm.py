"""pipelines/slurm/tune.sbatch, submitted for real to a single-node SLURM started by the test."""

from __future__ import annotations

import os
import sys

import optuna
import pytest
from optuna.trial import TrialState

from droptune.study.budget import budget_used
from tests.cluster import Slurm, slurm_missing
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.postgres]


@pytest.fixture(scope="module")
def slurm():
    why = slurm_missing()
    if why:
        pytest.skip(why)
    cluster = Slurm().start()
    yield cluster
    cluster.stop()


def test_sbatch_array_runs_two_workers_on_one_study(slurm, postgres, mlflow_server, tmp_path):
    storage = postgres.create_database("slurm")
    env = dict(
        os.environ,
        DROPTUNE_STORAGE=storage,
        MLFLOW_TRACKING_URI=mlflow_server.url,
        DROPTUNE_PYTHON=sys.executable,
        OMP_NUM_THREADS="1",
    )
    job = slurm.sbatch(
        "--array=0-1", "--gres=none", "--cpus-per-task=1", "--mem=2G",  # this node has no GPU
        f"--chdir={REPO}", f"--output={tmp_path}/slurm-%A_%a.out",
        str(REPO / "pipelines" / "slurm" / "tune.sbatch"),
        "data=digits", "trainer.accelerator=cpu", "trainer.max_epochs=3", "model.width=32",
        "study.name=slurm", "study.n_trials=4", f"paths.root_dir={tmp_path}",
        env=env,
    )  # fmt: skip
    slurm.wait(job)
    outputs = sorted(tmp_path.glob("slurm-*.out"))
    assert len(outputs) == 2, "both array tasks ran"
    study = optuna.load_study(study_name="slurm", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert budget_used(study) == 4 and len(finished) == 4, "\n".join(
        o.read_text()[-1500:] for o in outputs
    )
    for trial in finished:  # host:pid:SLURM job id
        assert trial.user_attrs["worker"].split(":")[2].isdigit()
    for output in outputs:  # each task ran the study to its end
        assert "study slurm:" in output.read_text()


def test_hydra_submitit_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "tune",
            ["hydra/launcher=droptune_slurm", "+worker=0", "study=postgres"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (
        cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.additional_parameters.requeue
    )
