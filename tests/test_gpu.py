"""On a CUDA machine: training runs on the GPU with the data resident there, a training step never
waits for the device, and the compiled fused step equals the eager one (skipped elsewhere)."""

import lightning as L
import pytest
import torch

from droptune.fit import fit
from droptune.fused.module import FusedClassifier
from droptune.inputs import load_data, splits
from tests.test_fused import MEMBERS, config, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


class NoHostSync(L.Callback):
    """From the second Lightning batch on (the first holds the warm-up steps), any
    device-to-host sync inside a training step raises."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx >= 1 or trainer.current_epoch >= 1:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")


def test_auto_accelerator_trains_on_the_gpu_with_resident_data_and_no_sync_per_step(make_cfg):
    cfg = make_cfg(
        "trainer.accelerator=auto", "trainer.max_epochs=3", "model.width=64", "optim=adam",
        "model.max_norm=3.0",
    )  # fmt: skip
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    devices = set()

    class BatchDevice(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            x, _ = batch[0]  # a run of steps: its first (x, y)
            devices.update({x.device.type, next(pl_module.parameters()).device.type})

    result = fit(cfg, arrays, train_index, val_index, callbacks=[BatchDevice(), NoHostSync()])
    assert result.device.startswith("cuda")
    assert devices == {"cuda"}  # batches come from tensors resident on the GPU
    assert result.history[-1]["val/acc"] > 0.5


def test_compiled_fused_steps_on_the_gpu_equal_eager_ones_without_a_sync(tmp_path, monkeypatch):
    cfgs = [
        config(tmp_path, "trainer.accelerator=auto", "optim=adam", *[o for o in m if "momentum" not in o])
        for m in MEMBERS
    ]  # fmt: skip
    step = FusedClassifier.training_step
    devices = set()

    def checked_step(self, steps, batch_idx):  # from the second epoch on: compiled, no sync
        devices.add(self.net.seeds.device.type)
        torch.cuda.set_sync_debug_mode("error" if self.current_epoch >= 1 else "default")
        try:
            return step(self, steps, batch_idx)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(FusedClassifier, "training_step", checked_step)
    (eager, eager_hist, _), (compiled, compiled_hist, _) = (
        train(cfgs, compile=c) for c in (False, True)
    )
    # read during the fits: Lightning moves a module back to the CPU when its fit ends
    assert devices == {"cuda"}
    for k in eager_hist:
        for a, b in zip(eager_hist[k], compiled_hist[k], strict=True):
            assert abs(a["val/loss"] - b["val/loss"]) <= 1e-4 * a["val/loss"], (a, b)


def test_a_study_trains_on_the_fused_runner_by_default_on_a_gpu(tmp_path):
    from mlflow.tracking import MlflowClient

    from droptune.study import optimize
    from tests.helpers import compose_config

    overrides = [
        f"paths.root_dir={tmp_path}", "data=digits", "trainer.max_epochs=2", "study.n_trials=4",
        "study.fused.k=4", "study.fused.compile=false",
    ]  # fmt: skip
    summary = optimize(compose_config(*overrides, config_name="tune"), {"data": "digits"})
    parent = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").get_run(
        summary["mlflow_parent_run_id"]
    )
    assert parent.data.tags["runner"] == "fused"  # study.runner=auto
    assert summary["n_complete"] + summary["n_pruned"] == 4
