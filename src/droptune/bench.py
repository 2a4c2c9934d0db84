"""`make bench`: seconds per trial-epoch, the reference way and ours, as JSON lines.

(a) the way Optuna's Lightning example trains (a torch DataLoader over a per-sample dataset that
converts each image like ToTensor), (b) the standard runner, (c) the fused runner at several K, and
an end-to-end study with MLflow logging. The model is the MLP 784-1024-1024-10 with Adam, batch 128.
Before them the standard runner against a plain loop (runner_overhead.py), after them the default
study against Optuna's Lightning example (time_to_quality.py). A benchmark to quote, never a timed
test.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from droptune import data as ds
from droptune import time_to_quality
from droptune.build import build_model
from droptune.config import validate
from droptune.fit import fit
from droptune.fused.fit import GroupOptions, train_group
from droptune.fused.grouping import Member, member_seed
from droptune.fused.module import FusedClassifier
from droptune.inputs import Split, load_data, splits
from droptune.peer import PerSample
from droptune.quiet import quiet_libraries
from droptune.runner_overhead import device_sync, sonar_config, standard_vs_plain

log = logging.getLogger("droptune")


def bench_arrays(cfg: Mapping[str, Any]) -> tuple[ds.Arrays, str]:
    """Fashion-MNIST from paths.data_dir, or synthetic data of the same shape if it is absent."""
    try:
        arrays = ds.load("fashion_mnist", cfg["paths"]["data_dir"], mirrors=[])
        return arrays, "fashion_mnist"
    except ds.DataFileError:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (60000, 1, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, 60000).astype(np.int64)
        return ds.Arrays(
            x, y, x[:10000], y[:10000], [str(i) for i in range(10)], (1, 28, 28), 255.0
        ), "synthetic"


class _Reference(L.LightningModule):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=1e-3)


def reference(
    cfg: Mapping[str, Any], arrays: ds.Arrays, train_index: np.ndarray, batches: int
) -> float:
    """(a) seconds per epoch, timed over `batches` batches after a warm-up and scaled to an epoch."""
    net = build_model(cfg["model"], arrays.input_shape, 10)
    loader = torch.utils.data.DataLoader(
        PerSample(arrays.x_train[train_index], arrays.y_train[train_index]),
        batch_size=128,
        shuffle=True,
    )
    trainer = L.Trainer(
        accelerator=cfg["trainer"]["accelerator"],
        max_epochs=1,
        limit_train_batches=batches + 10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 10:
                device_sync()
                times.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module):
            device_sync()
            times.append(time.perf_counter())

    trainer.callbacks.append(Clock())
    trainer.fit(_Reference(net), loader)
    return (times[1] - times[0]) / batches * len(loader)


def run(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All measurements; each is also logged as one JSON line."""
    quiet_libraries()
    cfg = validate(cfg)
    b = cfg["bench"]
    arrays, source = bench_arrays(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    device = (
        "cuda" if torch.cuda.is_available() and cfg["trainer"]["accelerator"] != "cpu" else "cpu"
    )
    params = sum(p.numel() for p in build_model(cfg["model"], (1, 28, 28), 10).parameters())
    flops_per_trial_epoch = 6 * params * len(train_index)  # forward + backward, per sample
    results: list[dict[str, Any]] = []

    def emit(way: str, seconds: float, **extra: Any) -> None:
        row = {
            "way": way,
            "s_per_trial_epoch": seconds,
            "device": device,
            "data": source,
            "tflops": flops_per_trial_epoch / seconds / 1e12,
            **extra,
        }
        reference_row = next((r for r in results if r["way"] == "reference"), None)
        if reference_row is not None:
            row["speedup_vs_reference"] = reference_row["s_per_trial_epoch"] / seconds
        results.append(row)
        print(json.dumps(row), flush=True)

    def record(row: dict[str, Any]) -> None:
        results.append(dict(row, device=device))
        print(json.dumps(results[-1]), flush=True)

    for width in b["plain_widths"]:
        mlp = dict(cfg["model"], depth=2, widths=[width, width])
        mlp_cfg = dict(cfg, model=mlp)
        record(standard_vs_plain(mlp_cfg, arrays, source, b["plain_repeats"], b["plain_epochs"]))
    sonar = sonar_config(cfg)
    if sonar is not None:
        sonar_arrays = load_data(sonar)
        record(
            standard_vs_plain(sonar, sonar_arrays, "sonar", b["plain_repeats"], b["sonar_epochs"])
        )
    emit("reference", reference(cfg, arrays, train_index, b["reference_batches"]))
    epochs = b["epochs"]
    cfg_runs = dict(cfg, trainer=dict(cfg["trainer"], max_epochs=epochs))
    standard = fit(cfg_runs, arrays, train_index, val_index)
    emit("standard", float(np.mean(standard.epoch_seconds[1:] or standard.epoch_seconds)))
    compile = b["compile"]
    for precision, ks in (("fp32", b["ks"]), ("bf16", b["bf16_ks"])):
        for k in ks:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            options = GroupOptions(compile=compile, precision=precision)
            history, _ = _fused(cfg_runs, arrays, (train_index, val_index), k=k, options=options)
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
            seconds = [epoch[0]["time/trial_epoch_s"] for epoch in history]
            emit(
                f"fused_k{k}" + ("" if precision == "fp32" else f"_{precision}"),
                float(np.mean(seconds[1:] or seconds)),
                k=k,
                precision=precision,
                compile=compile,
                peak_gpu_gib=peak,
                val_acc_mean=float(np.mean([m["val/acc"] for m in history[-1]])),
            )
    for precision in b["profile_precisions"]:
        split = (train_index[: b["profile_steps"] * 128], val_index)
        options = GroupOptions(compile=compile, precision=precision)
        row = profile(cfg_runs, arrays, split, k=b["profile_k"], options=options)
        results.append(dict(row, device=device, data=source))
        print(json.dumps(results[-1]), flush=True)
    studies = []
    if b["tune_trials"]:
        studies.append(("tune_end_to_end", b["tune_trials"], b["tune_epochs"], None))
    if b["fused_ttq_timeout"]:
        studies.append(
            (
                "fused_time_to_quality",
                b["fused_ttq_trials"],
                b["fused_ttq_epochs"],
                b["fused_ttq_timeout"],
            )
        )
    for way, trials, epochs, timeout in studies:
        row = end_to_end(cfg, arrays, trials, epochs, b["tune_k"], timeout)
        record(dict(way=way, data=source, **row))
    for data in b["ttq_data"] if b["ttq_timeout"] else []:
        row = time_to_quality.compare(cfg, data, b["ttq_timeout"])
        record(dict(way="time_to_quality", data=data, timeout_s=b["ttq_timeout"], **row))
    return results


def _fused(
    cfg: Mapping[str, Any],
    arrays: ds.Arrays,
    split: Split,
    *,
    k: int,
    options: GroupOptions,
    phase_seconds: dict[str, float] | None = None,
) -> tuple[list[list[dict[str, float]]], FusedClassifier]:
    """One fused fit of k copies of the config (own seeds); its per-epoch metrics and module."""
    members = [Member(i, cfg, member_seed(cfg["seed"], i)) for i in range(k)]
    history: list[list[dict[str, float]]] = []
    module = train_group(
        arrays,
        [split],
        members,
        lambda epoch, metrics: (history.append(metrics), [True] * len(metrics))[1],
        options,
        phase_seconds=phase_seconds,
    )
    return history, module


def profile(
    cfg: Mapping[str, Any], arrays: ds.Arrays, split: Split, *, k: int, options: GroupOptions
) -> dict[str, Any]:
    """Where a fused step's milliseconds go: forward, backward and optimizer (with max-norm), each
    timed with the device synchronised around it, over one epoch of `train_index` after a
    warm-up fit (compilation). Synchronising removes overlap, so the parts add up to a little
    more than an unprofiled step.

    Against the bandwidth limit: each phase's parameter traffic in GB/s, counting the bytes a
    phase must move per stored parameter (forward: read the weight; backward: read it, write its
    gradient; optimizer: read parameter, gradient and two moments (one for SGD), write all but the
    gradient), activations not counted. And, from a third fit under torch.profiler, the kernels
    that take the time (on a GPU their names say what was fused: `triton_per_` is a persistent
    reduction, one pass)."""
    one_epoch = dict(cfg, trainer=dict(cfg["trainer"], max_epochs=1))
    _fused(one_epoch, arrays, split, k=k, options=options)  # warm-up
    seconds: dict[str, float] = {}
    _, module = _fused(one_epoch, arrays, split, k=k, options=options, phase_seconds=seconds)
    steps = -(-len(split[0]) // cfg["data"]["batch_size"])
    per_param = module.net.weights[0].element_size()
    slots = 1 if cfg["optim"]["name"] == "sgd" else 2
    traffic = {"forward": 1, "backward": 2, "optimizer": 3 + 2 * slots}  # accesses per parameter
    param_bytes = per_param * sum(p.numel() for p in module.net.parameters())
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        _fused(one_epoch, arrays, split, k=k, options=options)
    precision = options.precision
    return {
        "way": f"profile_fused_k{k}_{precision}",
        "k": k,
        "precision": precision,
        "compile": options.compile,
        "steps": steps,
        "ms_evaluate": 1e3 * seconds.pop("evaluate"),
        "ms_per_step": {phase: 1e3 * s / steps for phase, s in seconds.items()},
        "param_gb_per_s": {
            phase: traffic[phase] * param_bytes * steps / s / 1e9 for phase, s in seconds.items()
        },
        "top_kernels": top_kernels(profiler, device=torch.cuda.is_available()),
    }


def top_kernels(
    profiler: torch.profiler.profile, device: bool, n: int = 15
) -> list[dict[str, Any]]:
    """The n kernels (device) or operators (CPU) with the most self time."""
    events = profiler.key_averages()
    field = "self_device_time_total" if device else "self_cpu_time_total"
    ranked = sorted(events, key=lambda e: getattr(e, field), reverse=True)[:n]
    return [
        {"name": e.key[:120], "calls": e.count, "ms": getattr(e, field) / 1e3}
        for e in ranked
        if getattr(e, field) > 0
    ]


def end_to_end(
    cfg: Mapping[str, Any],
    arrays: ds.Arrays,
    trials: int,
    epochs: int,
    k: int,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A whole fused study of N trials x E epochs (or until `timeout` seconds), every trial in
    MLflow and scored on the test set at its end: wall seconds, best validation value, and the
    selected (best validation) trial's test accuracy."""
    from droptune.study import optimize

    with tempfile.TemporaryDirectory() as root:
        study_cfg = dict(
            cfg,
            evaluate_test=True,
            trainer=dict(cfg["trainer"], max_epochs=epochs),
            study=dict(
                cfg["study"],
                name="bench",
                storage=f"sqlite:///{root}/optuna.db",
                n_trials=trials,
                runner="fused",
                fused=dict(cfg["study"]["fused"], k=k),
                checkpoint_dir=None,
                timeout=timeout,
            ),
            tracking=dict(
                cfg["tracking"],
                uri=f"sqlite:///{root}/mlflow.db",
                artifact_root=f"{root}/artifacts",
            ),
            paths=dict(cfg["paths"], output_dir=f"{root}/out"),
        )
        start = time.perf_counter()
        summary = optimize(study_cfg, arrays=arrays)
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "trials": trials,
        "epochs": epochs,
        "k": k,
        "timeout_s": timeout,
        "n_complete": summary["n_complete"],
        "n_pruned": summary["n_pruned"],
        "n_failed": summary["n_failed"],
        "best_value": summary["best_value"],
        "best_test_acc": summary["best_test_acc"],
    }
