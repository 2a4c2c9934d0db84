"""Small studies and reports at the CPU's speed: `auto` stacks trials on a CPU where a member-step
is small, and a report trains its configs x seeds x folds in one fit, each retrain as its own."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow.tracking import MlflowClient

from droptune.config import validate
from droptune.fused import CPU_STACKING_MACS, choose_runner, step_macs
from droptune.inputs import load_data
from droptune.report.fused import Pending, train_fused
from droptune.report.retrain import train_config
from droptune.report.run import make_report, plan
from droptune.study import optimize
from droptune.tracking import Tracker
from tests.helpers import SHARED_DATA, compose_config, needs_shared_data


@needs_shared_data
def test_auto_stacks_the_sonar_mlp_on_a_cpu_and_not_a_wide_fashion_mnist_mlp(tmp_path):
    def choice(*overrides):
        cfg = validate(
            compose_config(
                f"paths.root_dir={tmp_path}", f"paths.data_dir={SHARED_DATA}",
                "trainer.accelerator=cpu", *overrides,
            )
        )  # fmt: skip
        return choose_runner("auto", cfg, load_data(cfg))

    sonar = choice("experiment=seed004_sonar_hidden")
    assert sonar.fused and sonar.max_macs == CPU_STACKING_MACS, sonar
    wide = choice("data=fashion_mnist", "model.widths=[1024,1024]", "model.depth=2")
    assert not wide.fused and "multiply-accumulates" in wide.reason, wide


def test_auto_on_a_cpu_stacks_small_trials_and_trains_a_wide_one_on_the_standard_runner(tmp_path):
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "data=digits", "model.depth=1",
        "model.widths=[32]", "trainer.max_epochs=2", "study.n_trials=2", "study.sampler=grid",
        "study.pruner=none", "study.name=auto",
    ]  # fmt: skip
    cfg = compose_config(*overrides, config_name="tune")
    widths = [32, 4096]
    space = {"width": {"path": "model.widths.0", "type": "categorical", "choices": widths}}
    cfg["search"].update(space=space, enqueue=[])
    digits = load_data(validate(compose_config(*overrides[:4])))
    small, wide = (
        step_macs(validate(compose_config(*overrides[:4], f"model.widths=[{w}]")), digits)
        for w in widths
    )
    assert small <= CPU_STACKING_MACS < wide  # the rule's two sides
    summary = optimize(cfg, {"data": "digits"}, overrides)
    client = MlflowClient(cfg["tracking"]["uri"])
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags["runner"] == "fused"
    assert f"{small:,} multiply-accumulates" in parent.data.tags["runner_reason"]
    study = optuna.load_study(study_name="auto", storage=cfg["study"]["storage"])
    stacked = {t.params["width"]: "fused_group_size" in t.user_attrs for t in study.trials}
    assert stacked == {32: True, 4096: False}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_report_stacks_configs_seeds_and_folds_and_scores_each_as_trained_alone(tmp_path):
    """Every (config, seed) of the report trains as one fit of its own folds would: members
    draw from counter-based streams of their own seed, so stacking changes no number."""
    mlp = [
        "data=digits", "trainer.max_epochs=3", "model.depth=1", "model.widths=[32]",
        "data.cv_folds=3", "data.test_fraction=0",
    ]  # fmt: skip
    lines = {"a": [*mlp, "model.dropout.hidden=0.2"], "b": [*mlp, "model.dropout.hidden=0.5"]}
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "report.from_study=false",
        "report.runner=fused", "report.seeds=2", "report.reference=a", "report.baselines=false",
        f"report.configs={{a:{json.dumps(lines['a'])},b:{json.dumps(lines['b'])}}}",
    ]  # fmt: skip
    cfg = compose_config(*overrides, config_name="report")
    result = make_report(cfg, overrides)
    client = MlflowClient(cfg["tracking"]["uri"])
    report_run = result["mlflow_report_run_id"]
    experiment = client.get_run(report_run).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{report_run}'")
    assert len(runs) == 2 * 2 and {r.data.tags["runner"] for r in runs} == {"fused"}
    tracker = Tracker(cfg["tracking"]["uri"], "one by one")
    candidates = {c.name: c for c in plan(validate(cfg), overrides).candidates}
    for run in runs:
        name, seed = run.data.tags["report_candidate"], int(run.data.tags["report_seed"])
        config = validate(train_config([*candidates[name].overrides, f"seed={seed}"]))
        (alone,) = train_fused([Pending(name, seed, config)], [{}], tracker, None)
        alone_metrics = client.get_run(alone).data.metrics
        for key in ("cv/acc_mean", "cv/acc_std", "cv/acc_best_mean", "val/loss", "gap/acc"):
            assert run.data.metrics[key] == pytest.approx(alone_metrics[key], rel=1e-5, abs=1e-6), (
                key,
                run.data.metrics,
                alone_metrics,
            )
        curve = [m.value for m in client.get_metric_history(run.info.run_id, "val/acc")]
        assert curve == pytest.approx(
            [m.value for m in client.get_metric_history(alone, "val/acc")], rel=1e-5
        )
        assert len(curve) == 3  # fold means, one per epoch
    rows = {row["name"]: row for row in result["configs"]}
    assert rows["b"]["values"]["cv/acc_mean"] == [
        next(r for r in runs if r.data.tags["report_candidate"] == "b" and int(r.data.tags["report_seed"]) == s).data.metrics["cv/acc_mean"]
        for s in result["seeds"]
    ]  # fmt: skip
