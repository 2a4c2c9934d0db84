"""How far the standard runner is from a plain PyTorch loop: the same resident tensors, model and
optimizer, timed epoch by epoch (a `make bench` row, `standard_vs_plain`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from droptune import data as ds
from droptune.config import validate
from droptune.config.composed import compose_config
from droptune.data.datasets import CHECKSUMS
from droptune.fit import build_datamodule, build_module, fit
from droptune.inputs import Split, splits
from droptune.lit import make_optimizer


def device_sync() -> None:
    """Queued GPU work finished, so a clock reading covers it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sonar_config(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Sonar tutorial's MLP (experiment=seed004_sonar_hidden) on one split, if the Sonar file
    is in paths.data_dir (its steps are almost all fixed cost: 60-60-30-2, batch 16)."""
    if not (Path(cfg["paths"]["data_dir"]) / "sonar" / next(iter(CHECKSUMS["sonar"]))).exists():
        return None
    overrides = [
        "experiment=seed004_sonar_hidden",
        "data.cv_folds=null",
        f"paths.data_dir={cfg['paths']['data_dir']}",
        f"trainer.accelerator={cfg['trainer']['accelerator']}",
    ]
    return validate(compose_config("train", overrides))


def plain_loop(cfg: Mapping[str, Any], arrays: ds.Arrays, split: Split, epochs: int) -> list[float]:
    """Seconds of each epoch of a plain PyTorch loop (for each mini-batch: forward, loss,
    backward, step, and the model's max-norm where it has one: the same arithmetic) over the
    standard runner's own resident tensors, model and optimizer: the floor the standard runner,
    with its validation, metrics and hooks, is measured against."""
    L.seed_everything(cfg["seed"], verbose=False)
    module, _ = build_module(cfg, arrays)
    datamodule = build_datamodule(cfg, arrays, split, None)
    datamodule.setup()
    net = module.model.to(datamodule.tensors["train"][0].device)
    optimizer = make_optimizer(
        net.parameters(), module.optim, datamodule.tensors["train"][0].device
    )
    batches = ds.IndexBatches(
        *datamodule.tensors["train"], cfg["data"]["batch_size"], datamodule.generator
    )
    seconds = []
    for _ in range(epochs):
        device_sync()
        start = time.perf_counter()
        net.train()
        for x, y in batches:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if module.constraint is not None:
                module.constraint()
        device_sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def standard_vs_plain(
    cfg: Mapping[str, Any], arrays: ds.Arrays, data: str, repeats: int, epochs: int = 2
) -> dict[str, Any]:
    """The standard runner's seconds per epoch against a plain loop's (same data, model,
    optimizer and batch size): `repeats` pairs of a fit and a plain loop of `epochs` epochs,
    taken in turn so that a busy spell of the machine falls on both; each timed by the median of
    its epochs after the first (which warms up); the medians over pairs. A short epoch
    (Sonar's 12 steps) needs many epochs for its time to be more than noise."""
    cfg = dict(cfg, trainer=dict(cfg["trainer"], max_epochs=epochs))
    split = splits(cfg, arrays)[0]
    standard, plain = [], []
    for _ in range(repeats):
        standard.append(np.median(fit(cfg, arrays, *split).epoch_seconds[1:]))
        plain.append(np.median(plain_loop(cfg, arrays, split, epochs)[1:]))
    widths = cfg["model"]["widths"] or [cfg["model"]["width"]] * cfg["model"]["depth"]
    layers = [int(np.prod(arrays.input_shape)), *widths, len(arrays.classes)]
    return {
        "way": "standard_vs_plain",
        "data": data,
        "model": "-".join(str(w) for w in layers),
        "batch_size": cfg["data"]["batch_size"],
        "standard_s_per_epoch": float(np.median(standard)),
        "plain_s_per_epoch": float(np.median(plain)),
        # the median of the pairs' ratios: a pair shares the machine's state of the moment
        "ratio": float(np.median(np.array(standard) / np.array(plain))),
        "repeats": repeats,
        "epochs": epochs,
    }
