"""Train one config:  python pipelines/train.py data=fashion_mnist model.dropout.hidden=0.5"""

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
from droptune.mlflow_ui import DEFAULT_UI, run_link  # noqa: E402
from droptune.overrides import exit_if_misspelt  # noqa: E402
from droptune.train import train  # noqa: E402

log = logging.getLogger("droptune")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        choices = HydraConfig.get().runtime.choices
        summary = train(config, {k: v for k, v in choices.items() if not k.startswith("hydra")})
    except (ConfigError, DataFileError) as error:
        log.error("%s", error)
        sys.exit(2)
    metrics = summary["metrics"]
    shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith(("time/", "train/"))}
    log.info("result: %s", shown)
    log.info("%.3f s/epoch on %s", summary["seconds_per_epoch"], summary["device"])
    run = run_link(DEFAULT_UI, summary["mlflow_experiment_id"], summary["mlflow_run_id"])
    log.info("its run in MLflow (make ui): %s", run)
    log.info("summary: %s/summary.json", config["paths"]["output_dir"])


if __name__ == "__main__":
    exit_if_misspelt(Path(__file__).parents[1] / "conf", "train", sys.argv[1:])
    main()
