"""Which runner trains a study's trials: `study.runner` resolved for this config, data and
machine (fused.choose_runner), and the runner built."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from droptune.data import Arrays
from droptune.fused import RunnerChoice, choose_runner
from droptune.fused.fit import GroupOptions
from droptune.fused.grouping import unfused_reason
from droptune.fused.runner import FusedRunner
from droptune.trials.lifecycle import TrialContext
from droptune.trials.standard import StandardRunner

log = logging.getLogger("droptune")


def build_runner(
    cfg: Mapping[str, Any], context: TrialContext
) -> tuple[StandardRunner | FusedRunner, RunnerChoice]:
    """study.runner's runner, and why; the fused one stacks droptune's MLP over resident tensors
    only."""
    s, arrays = cfg["study"], context.arrays
    resident = isinstance(arrays, Arrays)
    choice = choose_runner(s["runner"], cfg, arrays)
    unfused = unfused_reason(cfg, context.folds) if s["runner"] == "auto" else None
    if unfused is not None:  # its trials would train one by one, asked k at a time
        choice = RunnerChoice(False, f"auto: the config trains alone ({unfused})")
    if not choice.fused:
        return StandardRunner(context), choice
    if cfg["model"]["family"] != "mlp" or not resident:
        log.info(
            "the fused runner trains droptune's MLP on resident data only: "
            "model=%s on data=%s runs on the standard runner",
            cfg["model"]["family"],
            cfg["data"]["name"],
        )
        return StandardRunner(context), RunnerChoice(False, f"{choice.reason}; not droptune's MLP")
    fused = s["fused"]
    options = GroupOptions(
        compile=fused["compile"],
        precision=fused["precision"],
        checkpoint_interval=fused["checkpoint_interval"],
    )
    runner = FusedRunner(context, capacity=fused["k"], options=options, choice=choice)
    return runner, choice
