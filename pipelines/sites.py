"""List a model's dropout sites:  python pipelines/sites.py model=custom model._target_=mypkg.Net"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("DROPTUNE_ROOT", str(Path(__file__).resolve().parents[1]))

from droptune.data import DataFileError  # noqa: E402
from droptune.errors import ConfigError  # noqa: E402
from droptune.overrides import exit_if_misspelt  # noqa: E402
from droptune.sites_table import sites_table  # noqa: E402

log = logging.getLogger("droptune")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        print(sites_table(OmegaConf.to_container(cfg, resolve=True)))
    except (ConfigError, DataFileError) as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    exit_if_misspelt(Path(__file__).parents[1] / "conf", "train", sys.argv[1:])
    main()
