"""The report's retrains stacked: configs x seeds (x folds) that share a shape train in one fit of
the fused runner, each (config, seed) still its own MLflow run with its own numbers. Every member
of seed s draws from member_seed(s, 0), so seed s of each config starts from the same weights (for
one shape) and sees the same data order as its pair: the pairing the intervals rely on."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from droptune.data import Arrays
from droptune.fit import cv_metrics, fold_mean
from droptune.fused import choose_runner
from droptune.fused.fit import GroupOptions, train_group
from droptune.fused.grouping import Member, epoch_steps, fusable, group_key, member_seed
from droptune.inputs import load_data, splits
from droptune.tracked_data import dataset_input
from droptune.tracking import Tracker

log = logging.getLogger("droptune")


@dataclass(frozen=True)
class Pending:
    """A retrain still to train: its config's name, its seed, and its config (seed set)."""

    name: str
    seed: int
    config: dict[str, Any]


def fused_plan(pending: Sequence[Pending], runner: str) -> list[list[int]]:
    """Positions in `pending` of the retrains that train together, a list per fit of two or
    more: same data and split rules, depth, width band, optimizer, epochs and steps an epoch."""
    groups: dict[str, list[int]] = {}
    loaded: dict[str, Any] = {}
    for i, retrain in enumerate(pending):
        cfg = retrain.config
        if not fusable(cfg, splits=()):  # a CNN, a variant the stacked model lacks: no data load
            continue
        data_key = json.dumps(cfg["data"], sort_keys=True, default=str)
        if data_key not in loaded:
            loaded[data_key] = load_data(cfg)
        arrays = loaded[data_key]
        if not isinstance(arrays, Arrays):
            continue
        folds = splits(cfg, arrays)
        if choose_runner(runner, cfg, arrays).stacks(cfg, arrays) and fusable(cfg, folds):
            shared = (group_key(cfg), data_key, cfg["test_seed"], cfg["evaluate_test"])
            key = json.dumps([*shared, epoch_steps(cfg, folds)[0]], sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
    return [positions for positions in groups.values() if len(positions) > 1]


def train_fused(
    group: Sequence[Pending],
    tags: Sequence[Mapping[str, Any]],
    tracker: Tracker,
    parent_run_id: str,
) -> list[str]:
    """One fit of every retrain in `group` (each fold of a k-fold one a member); each one's
    MLflow run id, in order: its curves (fold means under k-fold) and cv/* summary as `make
    train` logs them."""
    base = group[0].config
    arrays = load_data(base)
    folds_of = {r.seed: splits(r.config, arrays) for r in group}  # a seed's folds: one per seed
    offsets, every_split = {}, []
    for seed, folds in folds_of.items():
        offsets[seed] = len(every_split)
        every_split.extend(folds)
    members = [
        Member(i, r.config, member_seed(r.seed, 0), split=offsets[r.seed] + fold)
        for i, r in enumerate(group)
        for fold in range(len(folds_of[r.seed]))
    ]
    histories: list[list[dict[str, float]]] = [[] for _ in members]

    def report(epoch: int, metrics: list[dict[str, float]]) -> list[bool]:
        for history, m in zip(histories, metrics, strict=True):
            history.append(m)
        return [True] * len(metrics)

    start = time.perf_counter()
    train_group(arrays, every_split, members, report, GroupOptions())
    seconds = time.perf_counter() - start
    log.info("fused %d retrains (%d members): %.1f s", len(group), len(members), seconds)
    run_ids = []
    for i, (retrain, run_tags) in enumerate(zip(group, tags, strict=True)):
        folds = [histories[j] for j, m in enumerate(members) if m.index == i]
        curves = [fold_mean(epoch) for epoch in zip(*folds, strict=True)]
        run_id = tracker.start_run(
            f"{retrain.name} · seed {retrain.seed}",
            {"dataset": base["data"]["name"], "model": "mlp", "seed": retrain.seed, **run_tags},
            parent_run_id,
        )
        tracker.log_config(run_id, retrain.config)
        tracker.log_dataset(run_id, dataset_input(base["data"], arrays, folds_of[retrain.seed]))
        tracker.log_history(run_id, list(enumerate(curves)))
        if len(folds) > 1:  # as make train ends a k-fold run
            tests = [{k: v for k, v in f[-1].items() if k.startswith("test/")} for f in folds]
            tracker.log_metrics(run_id, cv_metrics([f[-1] for f in folds], tests), len(curves))
        tracker.end_run(run_id)
        run_ids.append(run_id)
    return run_ids
