"""Retrain a study's winners and baselines over seeds:  python pipelines/report.py study.name=fm-a"""

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
from droptune.overrides import exit_if_misspelt  # noqa: E402
from droptune.report.numbers import console_table, headline  # noqa: E402
from droptune.report.run import make_report  # noqa: E402
from droptune.signals import exit_on_signals  # noqa: E402

log = logging.getLogger("droptune")


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    hydra_cfg = HydraConfig.get()
    exit_on_signals()
    try:
        report = make_report(config, list(hydra_cfg.overrides.task))
    except (ConfigError, DataFileError) as error:
        log.error("%s", error)
        sys.exit(2)
    for line in console_table(report):
        log.info("%s", line)
    log.info("%s", headline(report))
    log.info("report: %s/report.html (and .md, .json)", config["paths"]["output_dir"])


if __name__ == "__main__":
    exit_if_misspelt(Path(__file__).parents[1] / "conf", "report", sys.argv[1:])
    main()
