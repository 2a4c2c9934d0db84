"""Dropout schedules: every site's rate, epoch by epoch, is what the schedule's definition says."""

import lightning as L
import numpy as np
import pytest
import torch

from droptune.errors import ConfigError
from droptune.fit import fit
from droptune.inputs import load_data, splits
from droptune.models.sites import dropout_modules

EPOCHS = 8  # with cutoff 0.25: epochs 0 and 1 come before the cutoff, 2 to 7 after it

# each epoch's factor on the target rate, from the papers' definitions at progress epoch / 8
DEFINITIONS = {
    ("constant", "constant"): [1, 1, 1, 1, 1, 1, 1, 1],
    ("early", "constant"): [1, 1, 0, 0, 0, 0, 0, 0],  # on until the cutoff (Liu et al. 2023)
    ("early", "linear"): [1, 0.5, 0, 0, 0, 0, 0, 0],  # decaying to 0 at the cutoff
    ("late", "constant"): [0, 0, 1, 1, 1, 1, 1, 1],  # off until the cutoff
    # from 0 at the cutoff (progress 0.25) towards the target at the end (progress 1)
    ("late", "linear"): [0, 0, 0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6],
    ("curriculum", "constant"): [0, 0.5, 1, 1, 1, 1, 1, 1],  # rising to the target (Morerio)
}


class RatesSeen(L.Callback):
    """Each epoch's rates as its first training batch sees them."""

    def __init__(self) -> None:
        self.epochs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.epochs.append([float(site.p) for site in dropout_modules(pl_module).values()])


def rates_per_epoch(cfg) -> list[list[float]]:
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    seen = RatesSeen()
    fit(cfg, arrays, train_index, val_index, callbacks=[seen])
    return seen.epochs


@pytest.mark.parametrize(("kind", "shape"), list(DEFINITIONS))
def test_each_schedule_sets_every_sites_rate_at_every_epoch_as_defined(make_cfg, kind, shape):
    cfg = make_cfg(
        "data=digits", "model.width=16", f"trainer.max_epochs={EPOCHS}",
        "model.dropout.input=0.2", "model.dropout.hidden=[0.4,0.6]",
        f"model.dropout.schedule.kind={kind}", f"model.dropout.schedule.shape={shape}",
        "model.dropout.schedule.cutoff=0.25",
    )  # fmt: skip
    targets = [0.2, 0.4, 0.6]  # input, then the hidden layers
    expected = [[t * factor for t in targets] for factor in DEFINITIONS[kind, shape]]
    np.testing.assert_allclose(rates_per_epoch(cfg), expected, atol=1e-9)


def test_a_users_model_has_its_discovered_sites_scheduled(make_cfg):
    cfg = make_cfg(
        "data=digits", "model=custom", "model._target_=examples.mynets.nets.SmallConvNet",
        "model.dropout.sites={head.drop:0.5}", f"trainer.max_epochs={EPOCHS}",
        "model.dropout.schedule.kind=early", "model.dropout.schedule.cutoff=0.25",
    )  # fmt: skip
    seen = rates_per_epoch(cfg)
    built = seen[0]  # epoch 0 is before the cutoff: every site at the rate it was built with
    assert 0.5 in built and len(built) == 3
    early = DEFINITIONS["early", "constant"]
    np.testing.assert_allclose(seen, [[rate * factor for rate in built] for factor in early])


def test_dropblock_rises_from_zero_under_the_curriculum_schedule_as_its_paper_does(make_cfg):
    cfg = make_cfg(
        "data=digits", "model=cnn", "model.channels=[4,4]", "model.head_widths=[16]",
        "model.dropout.conv=0.2", "model.dropout.conv_mode=block", "model.dropout.block_size=3",
        "model.dropout.hidden=0.0", f"trainer.max_epochs={EPOCHS}",
        "model.dropout.schedule.kind=curriculum", "model.dropout.schedule.cutoff=0.25",
    )  # fmt: skip
    curriculum = DEFINITIONS["curriculum", "constant"]
    np.testing.assert_allclose(rates_per_epoch(cfg), [[0.2 * f, 0.2 * f] for f in curriculum])


@pytest.mark.parametrize(
    ("override", "allowed"),
    [
        ("model.dropout.schedule.kind=sometimes", "one of constant, early, late, curriculum"),
        ("model.dropout.schedule.cutoff=1.5", "a fraction in (0, 1)"),
        ("model.dropout.schedule.shape=cosine", "one of constant, linear"),
    ],
)
def test_a_bad_schedule_is_refused_naming_key_value_and_what_is_allowed(
    make_cfg, override, allowed
):
    from droptune.train import train

    key, value = override.split("=")
    with pytest.raises(ConfigError) as refused:
        train(make_cfg("data=digits", override))
    assert key in str(refused.value) and value in str(refused.value)
    assert allowed in str(refused.value)


def test_a_fused_group_schedules_each_members_rates_as_defined(make_cfg):
    """Members of one group with different schedules: each member's rates in effect, epoch by
    epoch, are its targets times its own schedule's factor."""
    from unittest.mock import patch

    from droptune.fused.fit import train_group
    from droptune.fused.grouping import Member
    from droptune.fused.module import FusedClassifier

    cases = [("early", "linear"), ("late", "linear"), ("curriculum", "constant")]
    common = (
        "data=digits", "model.widths=[16,16]", "model.depth=2", f"trainer.max_epochs={EPOCHS}",
        "model.dropout.input=0.2", "model.dropout.hidden=0.4", "model.dropout.schedule.cutoff=0.25",
    )  # fmt: skip
    cfgs = [
        make_cfg(*common, f"model.dropout.schedule.kind={k}", f"model.dropout.schedule.shape={s}")
        for k, s in cases
    ]
    arrays = load_data(cfgs[0])
    ((train_index, val_index),) = splits(cfgs[0], arrays)
    seen = []
    start = FusedClassifier.on_train_epoch_start

    def recorded(self):
        start(self)
        input_rates, hidden_rates, _ = self.net.rates()
        seen.append(torch.cat([input_rates[:, None], hidden_rates], dim=1).tolist())

    members = [Member(i, cfg, seed=i) for i, cfg in enumerate(cfgs)]
    with patch.object(FusedClassifier, "on_train_epoch_start", recorded):
        train_group(arrays, [(train_index, val_index)], members, lambda e, m: [True] * len(m))
    for member, case in enumerate(cases):
        expected = [[0.2 * f, 0.4 * f, 0.4 * f] for f in DEFINITIONS[case]]
        actual = [epoch[member] for epoch in seen]
        np.testing.assert_allclose(actual, expected, atol=1e-6, err_msg=str(case))
