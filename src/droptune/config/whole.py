"""Whole train, tune, bench and report configs: the groups together, the checks across them, and
`checked`, the one entry point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import lightning as L
from pydantic import Field, ValidationError, model_validator

from droptune import targets
from droptune.config.adapter import config_error
from droptune.config.data import Data
from droptune.config.model import Model
from droptune.config.report import Report
from droptune.config.training import Optim, Paths, Tracking, Trainer
from droptune.config.tune import Bench, Search, Study
from droptune.config.types import IMAGE_DATASETS, METRICS, Allowed, Group, require


def default_metric(metric: str | None, cv: bool) -> str:
    """study.metric, or the default: val/acc_best, or the CV mean with data.cv_folds."""
    return metric or ("cv/acc_mean" if cv else "val/acc_best")


def objective_directions(objectives: list[str]) -> dict[str, str]:
    """study.objectives as {metric: direction}: a metric droptune logs has its own direction; any
    other (a user's LightningModule's) says its own after a colon, `my/metric:minimize`."""
    named = {}
    for entry in objectives:
        metric, _, direction = entry.partition(":")
        named[metric] = direction or METRICS.get(metric, "")
    return named


class Evaluate(Group):
    mc_samples: Annotated[int, Field(ge=0), Allowed("an integer >= 0 (0: no MC-dropout passes)")]


class TrainConfig(Group):
    task: Literal["train", "tune", "bench", "report"]
    seed: Annotated[int, Allowed("an integer")]
    test_seed: Annotated[int | None, Allowed("null (the seed) or an integer")]
    evaluate_test: bool
    evaluate: Evaluate
    data: Data
    model: Model
    optim: Optim
    trainer: Trainer
    tracking: Tracking
    paths: Paths

    @model_validator(mode="after")
    def _across_groups(self) -> TrainConfig:
        data, model = self.data, self.model
        if model.family == "cnn":
            require(
                data.name in (*IMAGE_DATASETS, "custom"),
                "model",
                "cnn",
                f"an image dataset ({', '.join(IMAGE_DATASETS)}); data={data.name} is a table",
            )
        require(
            not (model.family == "lightning" and model.dropout.variant == "concrete"),
            "model.dropout.variant",
            "concrete",
            "another variant with model=lightning: concrete dropout's regulariser joins the "
            "training loss, and a LightningModule of your own computes its own",
        )
        require(
            not (self.evaluate.mc_samples and model.family == "lightning"),
            "evaluate.mc_samples",
            self.evaluate.mc_samples,
            "0 with model=lightning: a LightningModule of your own evaluates itself",
        )
        if self.evaluate_test:
            # a user's DataModule: whether it has a test loader is known once it is built
            has_test = data.name in ("mnist", "fashion_mnist", "custom") or data.test_fraction > 0
            require(
                has_test,
                "evaluate_test",
                True,
                "only with a test set: data.test_fraction=0 holds none out",
            )
            if model.family == "lightning":
                module = targets.resolve("model._target_", model.target)
                require(
                    getattr(module, "test_step", None) is not L.LightningModule.test_step,
                    "evaluate_test",
                    True,
                    f"a LightningModule with a test_step: {model.target} has none",
                )
        return self


class TuneConfig(TrainConfig):
    search: Search
    study: Study

    @model_validator(mode="after")
    def _metric(self) -> TuneConfig:
        cv = bool(self.data.cv_folds)
        allowed = [m for m in METRICS if m.startswith("cv/") == cv]
        if self.study.objectives:
            self._objectives(allowed)
            return self
        metric = default_metric(self.study.metric, cv)
        # a user's LightningModule may log any metric of its own to optimise
        own = self.model.family == "lightning" and not cv and metric not in METRICS
        require(metric in allowed or own, "study.metric", metric, f"one of {', '.join(allowed)}")
        if not own:
            direction = METRICS[metric]
            ok = self.study.direction == direction
            require(ok, "study.direction", self.study.direction, f"{direction} for {metric}")
        return self

    def _objectives(self, allowed: list[str]) -> None:
        """Every objective is a metric the trials log, once, with its direction."""
        objectives = self.study.objectives
        require(
            self.study.metric is None,
            "study.metric",
            self.study.metric,
            "null with study.objectives (the objectives name the metrics)",
        )
        require(
            self.study.sampler != "cmaes",
            "study.sampler",
            self.study.sampler,
            "tpe, random, gp, qmc or grid with study.objectives (CMA-ES optimises one objective)",
        )
        named = objective_directions(objectives)
        require(
            len(named) == len(objectives),
            "study.objectives",
            objectives,
            "each metric once",
        )
        own = self.model.family == "lightning" and not self.data.cv_folds
        for metric, direction in named.items():
            if metric in METRICS:
                require(
                    metric in allowed and direction == METRICS[metric],
                    "study.objectives",
                    objectives,
                    f"metrics of {', '.join(allowed)} (each in its own direction: "
                    f"{metric} is {METRICS[metric]})"
                    if metric in allowed
                    else f"metrics of {', '.join(allowed)}",
                )
            else:
                require(
                    own and direction in ("maximize", "minimize"),
                    "study.objectives",
                    objectives,
                    f"metrics of {', '.join(allowed)}"
                    + (
                        ", or a metric of your module as name:maximize or name:minimize"
                        if own
                        else ""
                    ),
                )


class BenchConfig(TuneConfig):
    bench: Bench


class ReportConfig(TuneConfig):
    report: Report


SCHEMAS: dict[str, type[TrainConfig]] = {
    "train": TrainConfig,
    "tune": TuneConfig,
    "bench": BenchConfig,
    "report": ReportConfig,
}


def parse(cfg: Mapping[str, Any]) -> TrainConfig:
    """The typed config of a composed train, tune, bench or report config; one ConfigError if not."""
    task = cfg.get("task")
    require(task in SCHEMAS, "task", task, f"one of {', '.join(SCHEMAS)}")
    try:
        return SCHEMAS[task].model_validate(cfg)
    except ValidationError as error:
        raise config_error(error, cfg) from None


def checked(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A composed config, checked, as plain values with every optional key present."""
    return parse(cfg).model_dump(by_alias=True)
