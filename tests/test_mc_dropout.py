"""MC dropout: T passes with dropout on, averaged; its own random stream; its metrics per epoch."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from droptune.fit import fit
from droptune.inputs import load_data, splits
from droptune.mc_dropout import mc_log_probabilities


def net(p: float) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(p), nn.Linear(32, 3)).eval()


def test_mc_passes_are_the_mean_of_explicit_train_mode_passes_under_the_same_stream():
    model, x = net(0.5), torch.randn(40, 6)
    torch.manual_seed(7)
    mc = mc_log_probabilities(model, x, samples=8)
    assert not model[2].training  # the site is back in eval mode
    torch.manual_seed(7)
    model.train()
    with torch.no_grad():
        explicit = torch.stack([model(x).softmax(1) for _ in range(8)]).mean(0)
    torch.testing.assert_close(mc, explicit.log(), rtol=1e-5, atol=1e-6)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(mc, F.log_softmax(model(x), 1), atol=1e-3)  # passes differ


def test_with_rate_zero_mc_dropout_is_the_deterministic_pass():
    model, x = net(0.0), torch.randn(40, 6)
    with torch.no_grad():
        deterministic = F.log_softmax(model(x), 1)
    torch.testing.assert_close(mc_log_probabilities(model, x, samples=5), deterministic)


def test_a_fit_reports_mc_metrics_and_trains_as_a_fit_without_them(make_cfg):
    cfg = make_cfg("data=digits", "model.width=32", "trainer.max_epochs=2", "evaluate_test=true")
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    plain = fit(cfg, arrays, train_index, val_index, evaluate_test=True)
    mc_cfg = dict(cfg, evaluate={"mc_samples": 10})
    mc = fit(mc_cfg, arrays, train_index, val_index, evaluate_test=True)
    for a, b in zip(plain.module.parameters(), mc.module.parameters(), strict=True):
        assert torch.equal(a, b)  # the MC passes drew from a stream of their own
    for epoch, (without, with_mc) in enumerate(zip(plain.history, mc.history, strict=True)):
        assert {k: with_mc[k] for k in without} == without, epoch
        assert 0 <= with_mc["val/acc_mc"] <= 1 and 0 <= with_mc["val/ece_mc"] <= 1
        assert with_mc["val/nll_mc"] > 0
    assert {"test/acc_mc", "test/nll_mc", "test/ece_mc"} <= set(mc.test)
    assert "val/acc_mc" not in plain.history[-1] and "test/acc_mc" not in plain.test


def test_a_negative_sample_count_is_refused(make_cfg):
    from droptune.errors import ConfigError
    from droptune.train import train

    with pytest.raises(ConfigError, match="evaluate.mc_samples=-1.*integer >= 0"):
        train(make_cfg("data=digits", "evaluate.mc_samples=-1"))


def test_mc_dropout_of_a_users_lightning_module_is_refused(make_cfg):
    from droptune.errors import ConfigError
    from droptune.train import train

    cfg = make_cfg(
        "model=lightning", "model._target_=examples.mynets.lit.LitConvNet", "evaluate.mc_samples=5"
    )
    with pytest.raises(ConfigError, match="evaluate.mc_samples=5.*model=lightning"):
        train(cfg)
