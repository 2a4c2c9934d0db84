"""A seed's retrains trained in one fit where their configs allow it: the fused runner's stacked
MLP holds every config of a group (same data, depth, width band, optimizer, epochs) as members
that share the seed's streams, so seed i of each still starts from the same weights (for one
shape) and sees the same data order. Each member is still its own MLflow run."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from droptune.fused import use_fused
from droptune.fused.fit import GroupOptions, train_group
from droptune.fused.grouping import Member, fusable, group_key, member_seed
from droptune.inputs import load_data, splits
from droptune.tracked_data import dataset_input
from droptune.tracking import Tracker

log = logging.getLogger("droptune")


def fused_groups(configs: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """The names of the configs that train together, a list per fit of two or more (one split
    each: k-fold retrains train on the standard runner)."""
    groups: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        if not cfg["data"]["cv_folds"] and fusable(cfg, splits=()):  # no folds' steps to match
            shared = (group_key(cfg), cfg["data"], cfg["test_seed"], cfg["evaluate_test"])
            groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def train_fused(
    configs: Mapping[str, dict[str, Any]],
    seed: int,
    tags: Mapping[str, Mapping[str, Any]],
    tracker: Tracker,
    parent_run_id: str,
) -> dict[str, str]:
    """One fit of the configs (one seed's, of one group); each member's MLflow run id, by name.
    Every member is seeded alike: a paired comparison."""
    names = list(configs)
    base = configs[names[0]]
    arrays = load_data(base)
    folds = splits(base, arrays)
    dataset = dataset_input(base["data"], arrays, folds)
    members = [Member(i, configs[n], member_seed(seed, 0)) for i, n in enumerate(names)]
    histories: list[list[dict[str, float]]] = [[] for _ in names]

    def report(epoch: int, metrics: list[dict[str, float]]) -> list[bool]:
        for history, m in zip(histories, metrics, strict=True):
            history.append(m)
        return [True] * len(metrics)

    start = time.perf_counter()
    train_group(arrays, folds, members, report, GroupOptions())
    log.info("fused %d configs, seed %d: %.1f s", len(names), seed, time.perf_counter() - start)
    done = {}
    for name, history in zip(names, histories, strict=True):
        cfg = configs[name]
        run_tags = {"dataset": cfg["data"]["name"], "model": "mlp", "seed": seed, "runner": "fused"}
        run_id = tracker.start_run(
            f"{name} · seed {seed}", {**run_tags, **tags[name]}, parent_run_id
        )
        tracker.log_config(run_id, cfg)
        tracker.log_dataset(run_id, dataset)
        tracker.log_history(run_id, list(enumerate(history)))
        tracker.end_run(run_id)
        done[name] = run_id
    return done


def fused_plan(
    configs: Mapping[str, dict[str, Any]], runner: str
) -> tuple[list[list[str]], Sequence[str]]:
    """The groups that train fused and the names that train alone, for one seed's configs."""
    accelerator = next(iter(configs.values()))["trainer"]["accelerator"] if configs else "cpu"
    groups = fused_groups(configs) if use_fused(runner, accelerator) else []
    together = {n for g in groups for n in g}
    return groups, [n for n in configs if n not in together]
