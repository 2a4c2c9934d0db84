"""Start or resume a study:  python pipelines/tune.py data=mnist search=mlp_dropout study.n_trials=200"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("DROPTUNE_ROOT", str(Path(__file__).resolve().parents[1]))

from droptune.data import DataFileError  # noqa: E402
from droptune.errors import ConfigError  # noqa: E402
from droptune.mlflow_ui import DEFAULT_UI, runs_link, view_key  # noqa: E402
from droptune.overrides import exit_if_misspelt  # noqa: E402
from droptune.search import hydra_value  # noqa: E402
from droptune.signals import exit_on_signals  # noqa: E402
from droptune.study import optimize  # noqa: E402

log = logging.getLogger("droptune")


@hydra.main(version_base="1.3", config_path="../conf", config_name="tune")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    hydra_cfg = HydraConfig.get()
    exit_on_signals()
    try:
        summary = optimize(config, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task))
    except (ConfigError, DataFileError) as error:
        log.error("%s", error)
        sys.exit(2)
    log.info(
        "study %s: %d complete, %d pruned, %d failed",
        summary["study"],
        summary["n_complete"],
        summary["n_pruned"],
        summary["n_failed"],
    )
    for point in summary["pareto_front"] or []:
        values = "  ".join(f"{k} {v:.4f}" for k, v in point["values"].items())
        log.info("Pareto trial %d: %s  %s", point["trial"], values, point["params"])
    if summary["best_trial"] is not None:
        log.info(
            "best %.4f (trial %d): %s",
            summary["best_value"],
            summary["best_trial"],
            summary["best_params"],
        )
        args = " ".join(summary["best_overrides"])
        log.info(
            "retrain it:  make train ARGS=%s", hydra_value(args) if "'" in args else f"'{args}'"
        )
    view = runs_link(DEFAULT_UI, summary["mlflow_experiment_id"], view_key(summary["study"]))
    log.info("its trials in MLflow (make ui): %s", view)
    log.info("summary: %s/summary.json", config["paths"]["output_dir"])


if __name__ == "__main__":
    exit_if_misspelt(Path(__file__).parents[1] / "conf", "tune", sys.argv[1:])
    main()
