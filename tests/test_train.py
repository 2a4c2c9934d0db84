"""End to end: pipelines/train.py on digits, its MLflow run read back, CV and failures."""

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from droptune import signals
from droptune.errors import ConfigError
from droptune.fit import fit
from droptune.inputs import load_data, splits
from droptune.train import train
from tests import launch
from tests.helpers import REPO


def run_pipeline(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    return launch.run(
        [
            str(REPO / "pipelines" / "train.py"),
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/out",
            "trainer.accelerator=cpu",
            *overrides,
        ],
        timeout=300,
    )


def test_train_pipeline_logs_params_curves_config_and_summary(tmp_path):
    done = run_pipeline(
        tmp_path, "trainer.max_epochs=2", "model.dropout.hidden=0.3", "evaluate_test=true"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.dropout.hidden"] == "0.3"
    assert run.data.params["data.name"] == "digits"
    assert run.data.tags["dataset"] == "digits" and run.data.tags["seed"] == "0"
    assert len(run.data.tags["git_commit"]) in (40, len("unknown"))
    assert run.data.tags["droptune_version"]
    for key in (
        "train/loss",
        "train/acc",
        "train/acc_eval",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "gap/acc",
        "val/nll",
        "val/ece",
        "gap/nll",
    ):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history)[:2] == [0, 1], key
    acc = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/acc")}
    best = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/acc_best")}
    assert best[1] == max(acc[0], acc[1])
    gap = client.get_metric_history(run.info.run_id, "gap/acc")[0].value
    train_acc = client.get_metric_history(run.info.run_id, "train/acc_eval")[0].value
    assert gap == pytest.approx(train_acc - acc[0])
    assert 0.5 < run.data.metrics["test/acc"] <= 1.0
    assert summary["metrics"]["test/acc"] == run.data.metrics["test/acc"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "reliability.png"} <= artifacts
    config_text = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "hidden: 0.3" in Path(config_text).read_text()
    assert "val/acc_best" in done.stdout + done.stderr  # the short result was printed


@pytest.mark.fresh_store  # it checks that nothing is written
def test_bad_config_stops_before_any_work_with_one_line(tmp_path):
    done = run_pipeline(tmp_path, "model.dropout.hidden=1.5")
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "model.dropout.hidden=1.5" in errors[0] and "[0, 1)" in errors[0]
    assert not (tmp_path / "mlruns").exists()


def test_cross_validation_reports_mean_and_std_over_folds(make_cfg):
    cfg = make_cfg("data.cv_folds=3", "trainer.max_epochs=2", "model.width=32")
    summary = train(cfg)
    folds = [fold["val/acc"] for fold in summary["folds"]]
    assert len(folds) == 3
    assert summary["metrics"]["cv/acc_mean"] == pytest.approx(np.mean(folds))
    assert summary["metrics"]["cv/acc_std"] == pytest.approx(np.std(folds))
    client = MlflowClient(cfg["tracking"]["uri"])
    curve = client.get_metric_history(summary["mlflow_run_id"], "val/acc")
    assert len(curve) == 2  # the fold-mean curve, one point per epoch
    assert client.get_run(summary["mlflow_run_id"]).data.metrics["cv/acc_mean"] == pytest.approx(
        np.mean(folds)
    )


def test_a_run_that_fails_mid_training_ends_failed_in_mlflow(make_cfg, monkeypatch):
    from droptune.lit import DropoutClassifier

    step = DropoutClassifier.training_step

    def fail_on_second_batch(self, batch, batch_idx):  # after the first STEPS_PER_BATCH steps
        if batch_idx == 1:
            raise RuntimeError("injected fault")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DropoutClassifier, "training_step", fail_on_second_batch)
    cfg = make_cfg("trainer.max_epochs=1")
    with pytest.raises(RuntimeError, match="injected fault"):
        train(cfg)
    client = MlflowClient(cfg["tracking"]["uri"])
    runs = client.search_runs([client.get_experiment_by_name("droptune-digits").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_same_seed_same_result(make_cfg):
    cfg = make_cfg("trainer.max_epochs=2", "model.width=32")
    first, second = train(cfg), train(cfg)
    assert first["metrics"]["val/acc"] == second["metrics"]["val/acc"]
    assert first["mlflow_run_id"] != second["mlflow_run_id"]


def test_config_error_raised_by_train(make_cfg):
    with pytest.raises(ConfigError):
        train(make_cfg("optim.lr=-1"))


def test_a_fit_resumed_from_its_epoch_checkpoint_equals_the_uninterrupted_fit(make_cfg, tmp_path):
    import torch

    from droptune.fit import fit
    from droptune.inputs import load_data, splits

    cfg = make_cfg(
        "trainer.max_epochs=4", "model.width=32", "optim.schedule=exponential", "optim.gamma=0.7"
    )
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    whole = fit(cfg, arrays, train_index, val_index)
    first_half = dict(cfg, trainer=dict(cfg["trainer"], max_epochs=2))
    fit(first_half, arrays, train_index, val_index, checkpoint=tmp_path / "c.ckpt")
    resumed = fit(cfg, arrays, train_index, val_index, checkpoint=tmp_path / "c.ckpt")
    assert resumed.module.resumed_from_epoch == 2
    assert resumed.history == whole.history  # same dropout masks, data order, optimizer state
    for a, b in zip(whole.module.parameters(), resumed.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_stop_signal_whose_exception_was_lost_stops_the_fit_at_the_next_epoch(make_cfg):
    """Python only prints an exception raised inside a finaliser; the recorded signal still ends
    the fit (and so the trial, which the study then re-queues)."""
    cfg = make_cfg("data=digits", "trainer.max_epochs=5")
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    epochs = []

    def signal_lost_after_epoch_1(metrics, epoch):
        epochs.append(epoch)
        if epoch == 1:
            signals.record(signal.SIGINT)  # recorded by the handler, exception swallowed

    try:
        with pytest.raises(SystemExit) as stopped:
            fit(cfg, arrays, train_index, val_index, sinks=[signal_lost_after_epoch_1])
    finally:
        signals.forget()
    assert stopped.value.code == 128 + signal.SIGINT and epochs == [0, 1]


def test_many_steps_per_lightning_batch_train_and_score_as_a_plain_loop_does(make_cfg):
    """A fit steps its optimizer STEPS_PER_BATCH times per Lightning batch and evaluates its
    validation part and training probe itself; a plain PyTorch loop (one step per mini-batch:
    forward, loss, backward, clip, step, max-norm; the schedule, then an evaluation with dropout
    off, at each epoch's end) from the same seed ends on the same weights with the same metrics
    every epoch."""
    import lightning as L
    import torch
    from torch.nn import functional as F

    from droptune import data as ds
    from droptune.fit import build_datamodule, build_module

    cfg = make_cfg(
        "data=digits", "model.width=32", "trainer.max_epochs=3", "optim.schedule=exponential",
        "optim.gamma=0.7", "model.max_norm=1.5", "trainer.gradient_clip_val=0.5",
        "model.dropout.input=0.2",
    )  # fmt: skip
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    batches = -(-len(train_index) // cfg["data"]["batch_size"])
    assert batches % ds.STEPS_PER_BATCH != 0  # a short last run of steps is covered too
    fitted = fit(cfg, arrays, train_index, val_index)

    L.seed_everything(cfg["seed"], verbose=False)
    module, _ = build_module(cfg, arrays)
    net = module.model
    datamodule = build_datamodule(cfg, arrays, (train_index, val_index), None)
    datamodule.setup()
    x, y = datamodule.tensors["train"]
    order = torch.Generator().manual_seed(cfg["seed"])
    o = cfg["optim"]
    optimizer = torch.optim.SGD(net.parameters(), lr=o["lr"], momentum=o["momentum"])
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=o["gamma"])
    size = cfg["data"]["batch_size"]

    @torch.no_grad()
    def scored(part: str) -> tuple[float, float]:
        features, labels = datamodule.tensors[part]
        logits = net.eval()(features)
        net.train()
        correct = (logits.argmax(1) == labels).float().mean()
        return F.cross_entropy(logits, labels).item(), correct.item()

    history = []
    for _ in range(cfg["trainer"]["max_epochs"]):
        net.train()
        shuffled = torch.randperm(len(y), generator=order)
        loss_sum = correct = 0.0
        for start in range(0, len(y), size):
            batch = shuffled[start : start + size]
            logits = net(x[batch])
            loss = F.cross_entropy(logits, y[batch])
            loss_sum += loss.item() * len(batch)
            correct += (logits.argmax(1) == y[batch]).sum().item()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            optimizer.step()
            net.apply_max_norm()
        schedule.step()
        (val_loss, val_acc), (_, probe_acc) = scored("val"), scored("train_probe")
        history.append(
            {
                "train/loss": loss_sum / len(y),
                "train/acc": correct / len(y),
                "val/loss": val_loss,
                "val/acc": val_acc,
                "train/acc_eval": probe_acc,
                "gap/acc": probe_acc - val_acc,
            }
        )
    trained = dict(fitted.module.model.named_parameters())
    for name, plain in net.named_parameters():
        assert torch.allclose(trained[name], plain, atol=1e-6, rtol=0), name
    for epoch, (reported, by_hand) in enumerate(zip(fitted.history, history, strict=True)):
        for key, value in by_hand.items():
            assert reported[key] == pytest.approx(value, abs=1e-5), (epoch, key)
        best = max(h["val/acc"] for h in history[: epoch + 1])
        assert reported["val/acc_best"] == pytest.approx(best, abs=1e-5)


def test_mixed_precision_steps_through_lightning_and_learns(make_cfg):
    """Off full precision the module steps through Lightning's backward and optimizer wrappers
    (which cast and scale): the fit still learns digits."""
    cfg = make_cfg("data=digits", "trainer.max_epochs=3", "trainer.precision=bf16-mixed")
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    result = fit(cfg, arrays, train_index, val_index)
    assert len(result.history) == 3 and result.history[-1]["val/acc"] > 0.5
