"""Time to quality: Optuna's Lightning example (the peer) and droptune's default study (`make
tune ARGS="data=<name>"` as shipped), each given the same seconds on the same data and device.

Each study's course is its completed trials in the order they finished. Reported per side: the
trials it finished, its best validation accuracy, the test accuracy of the trial it selects (its
best validation trial; test accuracy is never used to select), and when it first reached the other
side's final best validation accuracy and the other side's selected test accuracy. The peer
validates on 512 images of its own split, droptune on its 5000: the test set is the common ruler,
so the test-accuracy crossing is the one to quote; the validation crossing is reported as asked.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna

from droptune import peer
from droptune.config import validate
from droptune.config.composed import compose_config
from droptune.inputs import Data, load_data


@dataclass(frozen=True)
class Finished:
    """One completed trial: seconds since its study started, validation value, test accuracy."""

    seconds: float
    value: float
    test_acc: float | None


def course(study: optuna.Study, start: datetime) -> list[Finished]:
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    return sorted(
        (
            Finished(
                (t.datetime_complete - start).total_seconds(), t.value, t.user_attrs.get("test_acc")
            )
            for t in done
        ),
        key=lambda f: f.seconds,
    )


def incumbents(finished: list[Finished]) -> list[Finished]:
    """The selected trial after each completion: the best validation value so far."""
    best: list[Finished] = []
    for f in finished:
        if not best or f.value > best[-1].value:
            best.append(f)
        else:
            best.append(Finished(f.seconds, best[-1].value, best[-1].test_acc))
    return best


def first_reaching(finished: list[Finished], target: float | None, field: str) -> float | None:
    """Seconds until the selected trial's `field` (value or test_acc) first reached `target`."""
    if target is None:
        return None
    return next(
        (
            f.seconds
            for f in incumbents(finished)
            if getattr(f, field) is not None and getattr(f, field) >= target
        ),
        None,
    )


def summary(finished: list[Finished], wall: float) -> dict[str, Any]:
    final = incumbents(finished)[-1] if finished else None
    return {
        "wall_s": wall,
        "n_complete": len(finished),
        "best_value": final.value if final else None,
        "selected_test_acc": final.test_acc if final else None,
        "course": [[round(f.seconds, 1), f.value, f.test_acc] for f in finished],
    }


def default_study(cfg: Mapping[str, Any], data: str, timeout: float, root: str) -> dict[str, Any]:
    """The config of `make tune ARGS="data=<data>"`, given `timeout` seconds, its stores in
    `root`, each trial also scored on the test set."""
    return validate(
        compose_config(
            "tune",
            [
                f"data={data}",
                f"seed={cfg['seed']}",
                f"paths.data_dir={cfg['paths']['data_dir']}",
                f"paths.output_dir={root}/out",
                f"trainer.accelerator={cfg['trainer']['accelerator']}",
                "evaluate_test=true",
                f"study.timeout={timeout}",
                f"study.storage=sqlite:///{root}/optuna.db",
                "study.checkpoint_dir=null",
                f"tracking.uri=sqlite:///{root}/mlflow.db",
                f"tracking.artifact_root={root}/artifacts",
            ],
        )
    )


def droptune_course(study_cfg: Mapping[str, Any], arrays: Data) -> tuple[list[Finished], float]:
    from droptune.study import optimize  # the study machinery, only when a study is measured

    start, clock = datetime.now(), time.perf_counter()
    optimize(study_cfg, arrays=arrays)
    wall = time.perf_counter() - clock
    s = study_cfg["study"]
    return course(optuna.load_study(study_name=s["name"], storage=s["storage"]), start), wall


def peer_course(
    cfg: Mapping[str, Any], arrays: Data, timeout: float
) -> tuple[list[Finished], float]:
    start, clock = datetime.now(), time.perf_counter()
    study = peer.run_study(arrays, timeout, cfg["trainer"]["accelerator"], cfg["seed"])
    return course(study, start), time.perf_counter() - clock


def compare(cfg: Mapping[str, Any], data: str, timeout: float) -> dict[str, Any]:
    """Both studies on `data` for `timeout` seconds each, one after the other. `times_sooner`:
    how much sooner droptune reached the peer's final quality than the peer itself did."""
    with tempfile.TemporaryDirectory() as root:
        study_cfg = default_study(cfg, data, timeout, root)
        arrays = load_data(study_cfg)
        ours, our_wall = droptune_course(study_cfg, arrays)
    theirs, their_wall = peer_course(cfg, arrays, timeout)
    row: dict[str, Any] = {
        "droptune": summary(ours, our_wall),
        "peer": summary(theirs, their_wall),
    }
    courses = {"droptune": ours, "peer": theirs}
    for side, other in (("droptune", "peer"), ("peer", "droptune")):
        for field, target in (("value", "best_value"), ("test_acc", "selected_test_acc")):
            row[side][f"s_to_{other}_{target}"] = first_reaching(
                courses[side], row[other][target], field
            )
    for field, target in (("value", "best_value"), ("test_acc", "selected_test_acc")):
        peer_own = first_reaching(theirs, row["peer"][target], field)
        ours_at = row["droptune"][f"s_to_peer_{target}"]
        row[f"times_sooner_{target}"] = peer_own / ours_at if peer_own and ours_at else None
    return row
