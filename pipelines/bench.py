"""Benchmark the ways to train dropout trials:  python pipelines/bench.py bench.ks=[8,32,128]"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("DROPTUNE_ROOT", str(Path(__file__).resolve().parents[1]))

from droptune.bench import run  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    results = run(config)
    out = Path(config["paths"]["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text("\n".join(json.dumps(r) for r in results) + "\n")


if __name__ == "__main__":
    main()
