"""The fused runner: members of a group train exactly as they would alone, masks differ per
member, pruning leaves the others untouched, and it agrees with the standard runner on average."""

from unittest.mock import patch

import lightning as L
import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from droptune.fit import fit
from droptune.fused.checkpoint import MemberCheckpoint
from droptune.fused.fit import GroupOptions, train_group
from droptune.fused.grouping import Member, member_seed
from droptune.fused.module import FusedClassifier
from droptune.inputs import load_data, splits
from droptune.models.stacked import STORAGE_DTYPES, StackedMLP
from droptune.study import optimize
from tests.helpers import compose_config

MEMBERS = [  # widths, hidden rate, input rate, lr, momentum, max-norm, placement, variant
    ("model.widths=[48,32]", "model.dropout.hidden=0.5", "model.dropout.input=0.2", "optim.lr=0.05", "optim.momentum=0.9", "model.max_norm=1.5", "model.dropout.placement=after", "model.dropout.variant=inverted"),
    ("model.widths=[16,40]", "model.dropout.hidden=0.1", "model.dropout.input=0.0", "optim.lr=0.02", "optim.momentum=0.5", "model.max_norm=null", "model.dropout.placement=before", "model.dropout.variant=gaussian"),
    ("model.widths=[32,8]", "model.dropout.hidden=0.3", "model.dropout.input=0.1", "optim.lr=0.1", "optim.momentum=0.0", "model.max_norm=3.0", "model.dropout.placement=before", "model.dropout.variant=classic"),
]  # fmt: skip


def config(tmp_path, *overrides):
    return compose_config(
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "data=digits", "trainer.max_epochs=3",
        "model.depth=2", *overrides,
    )  # fmt: skip


def train(cfgs, prune=(), **group_options):
    """Train cfgs as one group (members seeded by position); prune: the (member, epoch) pairs
    at which members leave.
    Returns the module, each member's per-epoch metrics, and the members left."""
    cfg = cfgs[0]
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    members = [Member(i, c, member_seed(c["seed"], i + 10)) for i, c in enumerate(cfgs)]
    histories = {i: [] for i in range(len(members))}
    alive = list(range(len(members)))

    def report(epoch, metrics):
        keep = []
        for i, m in zip(list(alive), metrics, strict=True):
            histories[i].append(m)
            keep.append((i, epoch) not in prune)
        alive[:] = [i for i, k in zip(list(alive), keep, strict=True) if k]
        return keep

    module = train_group(
        arrays, [(train_index, val_index)], members, report, GroupOptions(**group_options)
    )
    return module, histories, alive


def member_block(net: StackedMLP, k: int, sizes):
    """Member k's unpadded weights (out, in), layer by layer."""
    return [w.detach()[k, : sizes[i + 1], : sizes[i]] for i, w in enumerate(net.weights)]


def close(a, b):
    return abs(a - b) <= 1e-5 * max(1.0, abs(a))


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_a_member_in_a_group_trains_exactly_as_alone(tmp_path, optim):
    members = [[o for o in m if optim == "sgd" or "momentum" not in o] for m in MEMBERS]
    cfgs = [config(tmp_path, f"optim={optim}", *m) for m in members]
    group, group_hist, _ = train(cfgs)
    for k, cfg in enumerate(cfgs):
        # alone: its own group of one, with the same member seed
        arrays = load_data(cfg)
        ((train_index, val_index),) = splits(cfg, arrays)
        hist = []
        alone = train_group(
            arrays, [(train_index, val_index)], [Member(0, cfg, member_seed(cfg["seed"], k + 10))],
            lambda epoch, metrics, hist=hist: (hist.extend(metrics), [True])[1],
        )  # fmt: skip
        sizes = [64, *cfg["model"]["widths"], 10]
        for a, b in zip(
            member_block(group.net, k, sizes), member_block(alone.net, 0, sizes), strict=True
        ):
            assert (a - b).norm() <= 1e-5 * b.norm()  # fp32 summation order differs with padding
        for a, b in zip(group_hist[k], hist, strict=True):
            for key in ("train/loss", "val/loss", "val/acc", "train/acc_eval"):
                assert close(a[key], b[key]), (k, key, a[key], b[key])


def test_max_norm_holds_per_member_and_padding_stays_zero(tmp_path):
    cfgs = [config(tmp_path, *m) for m in MEMBERS]
    group, _, _ = train(cfgs)
    for k, cfg in enumerate(cfgs):
        c = cfg["model"]["max_norm"]
        sizes = [64, *cfg["model"]["widths"], 10]
        for i, weight in enumerate(group.net.weights):
            real = weight.detach()[k, : sizes[i + 1], : sizes[i]]
            padded = weight.detach()[k].clone()
            padded[: sizes[i + 1], : sizes[i]] = 0
            assert padded.abs().max() == 0  # padding never learns anything
            if c is not None and i < len(group.net.weights) - 1:
                assert real.norm(dim=1).max() <= c + 1e-5  # each unit's incoming weights


def test_masks_differ_between_members_with_the_same_rate():
    net = StackedMLP(
        20,
        3,
        widths=[[16], [16]],
        seeds=[1, 2],
        input_rates=[0.5, 0.5],
        hidden_rates=[[0.5], [0.5]],
        output_rates=[0.0, 0.0],
        max_norms=[None, None],
    )
    h = torch.ones(2, 8, 16)
    out = net._dropout(h, net.hidden_rates[:, 0], 1)
    assert not torch.equal(out[0], out[1])
    assert abs((out == 0).float().mean().item() - 0.5) < 0.1


def test_random_streams_are_uniform_uncorrelated_and_independent_of_padding():
    from droptune.models.stacked import uniform

    keys = torch.tensor([3, 4, 5, 6])
    u = uniform(keys, 64, 1024).double()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    centred = u - 0.5
    for a, b in [  # neighbours along every axis: members, rows (batch or unit), columns
        (centred[1:], centred[:-1]),
        (centred[:, 1:], centred[:, :-1]),
        (centred[:, :, 1:], centred[:, :, :-1]),
    ]:
        assert abs((a * b).mean().item() / (1 / 12)) < 0.01  # correlation
    assert torch.equal(uniform(keys, 64, 100), uniform(keys, 64, 1024)[:, :, :100])


def test_pruning_a_member_leaves_the_others_unchanged(tmp_path):
    cfgs = [config(tmp_path, *m) for m in MEMBERS]
    full, full_hist, _ = train(cfgs)
    pruned, pruned_hist, alive = train(cfgs, prune={(1, 0)})
    assert alive == [0, 2] and len(pruned_hist[1]) == 1
    assert pruned.net.weights[0].shape[0] == 2  # the stacked tensors shrank
    for k in (0, 2):
        for a, b in zip(full_hist[k], pruned_hist[k], strict=True):
            assert close(a["val/loss"], b["val/loss"]) and close(a["train/loss"], b["train/loss"])


@pytest.mark.slow
def test_fused_and_standard_runner_agree_in_distribution(tmp_path):
    """Mean validation accuracy over 6 seeds on digits, within 1 point."""
    fused_acc, standard_acc = [], []
    for seed in range(6):
        cfg = config(
            tmp_path, f"seed={seed}", "model.widths=[64,64]", "model.dropout.hidden=0.3",
            "optim=adam", "trainer.max_epochs=10",
        )  # fmt: skip
        arrays = load_data(cfg)
        ((train_index, val_index),) = splits(cfg, arrays)
        standard_acc.append(fit(cfg, arrays, train_index, val_index).history[-1]["val/acc"])
        hist = []
        train_group(
            arrays, [(train_index, val_index)], [Member(0, cfg, member_seed(seed, 0))],
            lambda epoch, metrics, hist=hist: (hist.extend(metrics), [True])[1],
        )  # fmt: skip
        fused_acc.append(hist[-1]["val/acc"])
    assert abs(np.mean(fused_acc) - np.mean(standard_acc)) <= 0.01, (fused_acc, standard_acc)


@pytest.mark.parametrize(
    "metrics_every_s",
    [pytest.param(0.0, marks=pytest.mark.slow), 600.0],
    ids=["each_epoch", "at_trial_end"],
)
def test_fused_study_runs_every_trial_with_its_own_mlflow_run(
    tmp_path, monkeypatch, metrics_every_s
):
    import droptune.fused.runner

    monkeypatch.setattr(
        droptune.fused.runner, "METRICS_EVERY_S", metrics_every_s
    )  # curves, both ways
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "data=digits", "trainer.max_epochs=3",
        "study.name=f", "study.runner=fused", "study.fused.k=4", "study.n_trials=8", "evaluate_test=true",
    ]  # fmt: skip
    cfg = compose_config(*overrides, config_name="tune")
    summary = optimize(cfg, {"data": "digits"}, overrides)
    study = optuna.load_study(study_name="f", storage=cfg["study"]["storage"])
    assert len(study.trials) == 8
    assert summary["n_complete"] + summary["n_pruned"] + summary["n_failed"] == 8
    assert {t.user_attrs.get("fused_group_size") for t in study.trials} - {
        None
    }  # trained in groups
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg["tracking"]["uri"])
    assert summary["best_test_acc"] == study.best_trial.user_attrs["test_acc"]
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["state"] == trial.state.name
        if (
            trial.state == TrialState.COMPLETE
        ):  # its own model, evaluated on the test set at the end
            assert run.data.metrics["test/acc"] == trial.user_attrs["test_acc"]
        if trial.state != TrialState.FAIL:
            assert len(client.get_metric_history(run.info.run_id, "val/acc")) == len(
                trial.intermediate_values
            )


@pytest.mark.slow
def test_bench_writes_json_lines_for_every_way(tmp_path):
    import json

    from tests import launch
    from tests.helpers import REPO

    done = launch.run(
        [str(REPO / "pipelines" / "bench.py"), f"paths.root_dir={tmp_path}",
         f"paths.data_dir={tmp_path}/nodata", f"paths.output_dir={tmp_path}/out", "trainer.accelerator=cpu",
         "model.widths=[16,16]", "bench.epochs=1", "bench.reference_batches=5", "bench.ks=[2]",
         "bench.bf16_ks=[2]", "bench.compile=false", "bench.profile_precisions=[fp32]", "bench.profile_k=2",
         "bench.profile_steps=3", "bench.fused_ttq_timeout=600", "bench.fused_ttq_trials=2",
         "bench.fused_ttq_epochs=1", "bench.ttq_timeout=0",
         *[f"search.space.width_{i}.{end}={n}" for i in (0, 1) for end, n in (("low", 8), ("high", 16))],
         "bench.tune_trials=2", "bench.tune_epochs=1", "bench.tune_k=2", "bench.plain_widths=[8]",
         "bench.plain_repeats=1"],
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "bench.json").read_text().splitlines()]
    plain = rows.pop(0)  # no Sonar file in paths.data_dir: the MLP row only
    assert plain["way"] == "standard_vs_plain" and plain["model"] == "784-8-8-10"
    assert plain["ratio"] == pytest.approx(
        plain["standard_s_per_epoch"] / plain["plain_s_per_epoch"]
    )
    assert [r["way"] for r in rows] == [
        "reference", "standard", "fused_k2", "fused_k2_bf16", "profile_fused_k2_fp32", "tune_end_to_end",
        "fused_time_to_quality",
    ]  # fmt: skip
    timed = rows[:4]
    assert all(r["data"] == "synthetic" for r in timed)
    assert all(r["s_per_trial_epoch"] > 0 and r["tflops"] > 0 for r in timed)
    assert rows[1]["speedup_vs_reference"] == pytest.approx(
        rows[0]["s_per_trial_epoch"] / rows[1]["s_per_trial_epoch"]
    )
    assert [r["precision"] for r in rows[2:4]] == ["fp32", "bf16"]
    assert all(0 <= r["val_acc_mean"] <= 1 for r in rows[2:4])
    profile = rows[4]
    assert set(profile["ms_per_step"]) == {"forward", "backward", "optimizer"}
    assert all(ms > 0 for ms in profile["ms_per_step"].values()) and profile["steps"] == 3
    assert set(profile["param_gb_per_s"]) == set(profile["ms_per_step"])
    # the optimizer moves 7 parameter-sized tensors (Adam), the forward reads 1: rates in proportion
    ratio = profile["param_gb_per_s"]["optimizer"] / profile["param_gb_per_s"]["forward"]
    assert ratio == pytest.approx(
        7 * profile["ms_per_step"]["forward"] / profile["ms_per_step"]["optimizer"]
    )
    kernels = profile["top_kernels"]
    assert kernels and all(k["calls"] > 0 and k["ms"] > 0 for k in kernels)
    assert [k["ms"] for k in kernels] == sorted((k["ms"] for k in kernels), reverse=True)
    assert any("mm" in k["name"] for k in kernels)  # the stacked matmuls are among them
    for study in rows[5:]:
        assert study["trials"] == 2 and study["wall_s"] > 0
        assert study["n_complete"] + study["n_pruned"] + study["n_failed"] == 2
    assert 0 <= rows[6]["best_test_acc"] <= 1  # the selected trial's test accuracy


@pytest.mark.parametrize(
    "pruner",
    [
        lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
        lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4, reduction_factor=2),
    ],
    ids=["median", "successive_halving", "hyperband"],
)
def test_a_group_pruned_from_one_read_of_the_study_decides_as_should_prune_does(tmp_path, pruner):
    """PruningView (one read of the study per group epoch) against Trial.should_prune per trial."""
    from droptune.trials.pruning import PruningView

    curves = np.random.default_rng(0).uniform(0.3, 0.9, size=(8, 4))

    def decisions(db, decide):  # hyperband's brackets hash the study name: the same in both
        study = optuna.create_study(
            study_name="group", storage=f"sqlite:///{tmp_path}/{db}.db", direction="maximize",
            pruner=pruner(), sampler=optuna.samplers.RandomSampler(seed=0),
        )  # fmt: skip
        for c in range(3):  # finished trials to compare with
            trial = study.ask()
            for step in range(4):
                trial.report(0.4 + 0.1 * c + 0.01 * step, step)
            study.tell(trial, 0.45 + 0.1 * c)
        running = [study.ask() for _ in curves]
        made = []
        for step in range(4):
            for trial, curve in zip(running, curves, strict=True):
                trial.report(float(curve[step]), step)
            made.append(decide(study, running))
        return made

    alone = decisions("alone", lambda study, trials: [t.should_prune() for t in trials])
    viewed = decisions(
        "viewed", lambda study, trials: (lambda v: [v.should_prune(t) for t in trials])(
            PruningView(study)
        ),
    )  # fmt: skip
    assert viewed == alone
    flat = [d for step in alone for d in step]
    assert any(flat) and not all(flat)  # the curves make the pruner choose both ways


def test_groups_share_depth_settings_and_a_width_band(tmp_path):
    from droptune.fused.grouping import group_key

    def key(*overrides):
        return group_key(config(tmp_path, *overrides))

    assert key("model.widths=[600,64]") == key("model.widths=[1000,900]")  # both in (512, 1024]
    assert key("model.widths=[600,64]") != key("model.widths=[300,64]")  # padding would double
    assert key("model.widths=[64,64]") != key("model.widths=[64]", "model.depth=1")
    assert key("model.widths=[64,64]", "model.dropout.variant=gaussian") == key(
        "model.widths=[64,64]"
    )
    assert key("model.widths=[64,64]", "optim=adam") != key("model.widths=[64,64]")


def test_a_diverging_member_fails_and_its_group_goes_on(tmp_path):
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "data=digits", "trainer.max_epochs=3",
        "study.name=diverge", "study.runner=fused", "study.fused.k=2", "study.n_trials=2", "study.sampler=grid",
        "study.pruner=none", "model.width=32",
    ]  # fmt: skip
    cfg = compose_config(*overrides, config_name="tune")
    cfg["search"].update(
        space={"lr": {"path": "optim.lr", "type": "categorical", "choices": [0.05, 1.0e6]}},
        enqueue=[],
    )
    optimize(cfg, {"data": "digits"}, overrides)
    trials = {
        t.params["lr"]: t
        for t in optuna.load_study(study_name="diverge", storage=cfg["study"]["storage"]).trials
    }
    assert (
        trials[1.0e6].state == TrialState.FAIL
        and "is nan" in trials[1.0e6].user_attrs["fail_reason"]
    )
    assert trials[0.05].state == TrialState.COMPLETE and len(trials[0.05].intermediate_values) == 3
    assert trials[0.05].user_attrs["fused_group_size"] == 2  # they trained together
    assert "test_acc" not in trials[0.05].user_attrs  # the test set is read only when asked


@pytest.mark.slow
@pytest.mark.compiled
def test_compiled_steps_equal_eager_steps(tmp_path):
    """torch.compile fuses masks, optimizer and max-norm into few kernels; the maths is unchanged."""
    cfgs = [config(tmp_path, "optim=adam", *[o for o in m if "momentum" not in o]) for m in MEMBERS]
    frames = dict(torch._dynamo.utils.counters["frames"])
    (eager, eager_hist, _), (compiled, compiled_hist, _) = (
        train(cfgs, compile=c) for c in (False, True)
    )
    new = {k: v - frames.get(k, 0) for k, v in torch._dynamo.utils.counters["frames"].items()}
    assert new["total"] == new["ok"] > 0  # really compiled, not fallen back to eager
    for a, b in zip(eager.net.parameters(), compiled.net.parameters(), strict=True):
        assert (a - b).norm() <= 1e-5 * a.norm()
    for k in eager_hist:
        for a, b in zip(eager_hist[k], compiled_hist[k], strict=True):
            assert close(a["val/loss"], b["val/loss"]) and close(a["train/loss"], b["train/loss"])


@pytest.mark.slow
@pytest.mark.compiled
def test_groups_of_any_size_and_width_reuse_the_first_groups_graphs(tmp_path):
    """A compile costs seconds to a minute per function, a large part of a short study: other
    sizes and widths, members leaving down to one, and a group of one reuse the first group's
    graphs (new ones come only with a new set of variants or another storage type; members
    leaving keep their group's set)."""
    torch._dynamo.reset()  # graphs compiled by other tests would hide a recompile
    graphs, frames = torch._dynamo.utils.counters["stats"], torch._dynamo.utils.counters["frames"]
    frames_before = dict(frames)
    odd = ("model.dropout.variant=gaussian", "model.dropout.placement=before")
    # two members, both hidden layers padded to 32: sizes that must not be assumed equal later
    first = [
        config(tmp_path, "optim=adam", "model.widths=[32,32]", "model.max_norm=2.0", *odd),
        config(tmp_path, "optim=adam", "model.widths=[32,32]", "model.max_norm=null"),
    ]
    train(first, compile=True)
    compiled_graphs = graphs["unique_graphs"]
    assert compiled_graphs > 0
    other = [
        config(tmp_path, "optim=adam", f"model.widths=[{w},{w // 2}]", *extra)
        for w, extra in ((40, odd), (20, ()), (24, ()))
    ]
    # 3 members, then 2 (none gaussian or before any more), then 1
    _, _, alive = train(other, prune={(0, 0), (2, 1)}, compile=True)
    assert alive == [1]
    lone = [config(tmp_path, "optim=adam", "model.widths=[24,40]", "model.max_norm=2.0", *odd)]
    (compiled, compiled_hist, _), (eager, eager_hist, _) = (
        train(lone, compile=c) for c in (True, False)
    )
    assert graphs["unique_graphs"] == compiled_graphs
    new_frames = {k: v - frames_before.get(k, 0) for k, v in frames.items()}
    assert new_frames["total"] == new_frames["ok"] > 0  # compiled, never fallen back to eager
    # a compiled group of one holds a copy of its member as a second row; the member's own
    # results are those it has alone, uncompiled
    assert len(compiled.net.seeds) == 2 and len(eager.net.seeds) == 1
    for a, b in zip(eager.net.parameters(), compiled.net.parameters(), strict=True):
        assert (a[0] - b[0]).norm() <= 1e-5 * a[0].norm()
    for a, b in zip(eager_hist[0], compiled_hist[0], strict=True):
        assert close(a["val/loss"], b["val/loss"]) and close(a["train/loss"], b["train/loss"])


def test_stochastic_rounding_to_bf16_is_unbiased_where_nearest_rounding_stalls():
    from droptune.models.stacked_optim import _store_

    ones = torch.ones(1, 1, 4096)
    stochastic = ones.to(torch.bfloat16)
    keys = torch.tensor([7])
    for step in range(100):  # 100 updates of 1e-4, each under half of bf16's spacing at 1 (2**-7)
        _store_([(stochastic, stochastic.float() + 1e-4)], keys + step)
    nearest = ones.to(torch.bfloat16)
    for _ in range(100):
        nearest = (nearest.float() + 1e-4).to(torch.bfloat16)
    assert torch.equal(nearest, ones.to(torch.bfloat16))  # round-to-nearest never moves
    assert abs(stochastic.float().mean().item() - 1.01) < 0.002  # right on average
    one_step = torch.empty(1, 1, 4096, dtype=torch.bfloat16)
    _store_([(one_step, ones + 0.3 * 2**-7)], keys)  # 30% of the way to the next bf16 value
    assert set(one_step.float().unique().tolist()) == {1.0, 1.0 + 2**-7}  # only the neighbours
    assert abs((one_step.float() > 1).float().mean().item() - 0.3) < 0.03


@pytest.mark.slow
def test_bf16_storage_learns_like_fp32(tmp_path):
    """Weights and optimizer state stored in bf16: final validation accuracy within 3 points."""
    cfgs = [
        config(tmp_path, "optim=adam", "optim.lr=0.003", "trainer.max_epochs=8", f"seed={seed}")
        for seed in range(4)
    ]
    final = {}
    for precision in ("fp32", "bf16"):
        module, hist, _ = train(cfgs, precision=precision)
        assert all(p.dtype == STORAGE_DTYPES[precision] for p in module.net.parameters())
        assert all(
            s.dtype == STORAGE_DTYPES[precision] for st in module.optimizer.state for s in st
        )
        final[precision] = np.mean([h[-1]["val/acc"] for h in hist.values()])
    assert final["fp32"] > 0.9
    assert abs(final["bf16"] - final["fp32"]) <= 0.03, final


class Killed(Exception):
    """Stands for the worker dying in the middle of an epoch."""


@pytest.mark.parametrize("schedule", ["none", "cosine"])
def test_a_member_resumed_from_its_checkpoint_trains_as_if_never_stopped(tmp_path, schedule):
    cfgs = [
        config(tmp_path, "optim=adam", "trainer.max_epochs=4", f"optim.schedule={schedule}", *[o for o in m if "momentum" not in o])
        for m in MEMBERS
    ]  # fmt: skip
    arrays = load_data(cfgs[0])
    ((train_index, val_index),) = splits(cfgs[0], arrays)
    paths = [tmp_path / "ckpt" / f"trial_{i}" / "fused.pt" for i in range(len(cfgs))]

    def members(resume=False):
        return [
            Member(i, c, member_seed(c["seed"], i), paths[i], MemberCheckpoint.load(paths[i]) if resume else None)
            for i, c in enumerate(cfgs)
        ]  # fmt: skip

    full = []
    whole = train_group(
        arrays, [(train_index, val_index)], members(),
        lambda epoch, metrics: (full.append(metrics), [True] * len(metrics))[1],
    )  # fmt: skip

    def dies_in_epoch_2(epoch, metrics):
        if epoch == 2:
            raise Killed
        return [True] * len(metrics)

    with pytest.raises(Killed):
        train_group(
            arrays,
            [(train_index, val_index)],
            members(),
            dies_in_epoch_2,
            GroupOptions(checkpoint_interval=0),
        )
    assert all(MemberCheckpoint.load(p).epoch == 2 for p in paths)
    resumed_epochs = []
    resumed = train_group(
        arrays, [(train_index, val_index)], members(resume=True),
        lambda epoch, metrics: (resumed_epochs.append(epoch), [True] * len(metrics))[1],
    )  # fmt: skip
    assert resumed_epochs == [2, 3]  # only the remaining epochs, numbered from where it stopped

    def curves(module):
        return [
            [{k: v for k, v in m.items() if not k.startswith("time/")} for m in h]
            for h in module.histories
        ]

    assert curves(resumed) == curves(whole)  # the same values, and the saved epochs carried over
    for a, b in zip(whole.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_successive_halving_prunes_inside_the_first_batch(tmp_path):
    """The median pruner compares with finished trials only, so it cannot act on the first K;
    successive halving with a fixed min_resource ranks every trial that reached a rung, members of
    the same group included."""
    overrides = [
        f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu", "data=digits", "trainer.max_epochs=4",
        "study.name=asha", "study.runner=fused", "study.fused.k=8", "study.n_trials=8",
        "study.pruner=successive_halving", "+study.pruner_args.min_resource=1", "model.width=32",
    ]  # fmt: skip
    cfg = compose_config(*overrides, config_name="tune")
    summary = optimize(cfg, {"data": "digits"}, overrides)
    study = optuna.load_study(study_name="asha", storage=cfg["study"]["storage"])
    assert summary["n_pruned"] > 0 and summary["n_complete"] > 0
    first_end = min(t.datetime_complete for t in study.trials)
    assert all(t.datetime_start < first_end for t in study.trials)  # all in the first batch


def test_a_compiler_failure_falls_back_to_eager():
    """A broken toolchain must not fail every trial of a fused group: the step runs eagerly."""
    import torch._inductor.config as inductor

    from droptune.models.stacked import compiled

    frames = dict(torch._dynamo.utils.counters["frames"])
    double_plus_one = compiled(lambda x: x * 2 + 1)
    # patch(), not monkeypatch: torch's config modules lose a key that monkeypatch restores
    with inductor.patch({"fx_graph_cache": False, "cpp.cxx": ("/nonexistent/c++",)}):
        assert torch.equal(double_plus_one(torch.ones(3)), torch.full((3,), 3.0))
    counts = torch._dynamo.utils.counters["frames"]
    assert counts["total"] - frames.get("total", 0) == 1 and counts["ok"] == frames.get("ok", 0)


@pytest.mark.parametrize("schedule", ["cosine", "exponential"])
def test_a_group_follows_the_schedule_a_standard_fit_takes_from_torch(tmp_path, schedule):
    cfg = config(tmp_path, f"optim.schedule={schedule}", "optim.gamma=0.7", "trainer.max_epochs=4")
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    standard_lrs = []

    class LearningRates(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            standard_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    fit(cfg, arrays, train_index, val_index, callbacks=[LearningRates()])
    fused_lrs = []
    start = FusedClassifier.on_train_epoch_start

    def recorded(self):
        start(self)
        fused_lrs.append(float(self.optimizer.lr.flatten()[0]))

    with patch.object(FusedClassifier, "on_train_epoch_start", recorded):
        train_group(
            arrays, [(train_index, val_index)], [Member(0, cfg, 0)], lambda e, m: [True] * len(m)
        )
    assert len(set(standard_lrs)) == 4  # the rate moves every epoch
    assert fused_lrs == pytest.approx(standard_lrs, rel=1e-6)
