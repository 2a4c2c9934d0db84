"""Dropout semantics per variant: what is zeroed, how it is scaled, and that modes agree in mean."""

import pytest
import torch
from torch import nn

from droptune.models import ClassicDropout, GaussianDropout, make_dropout

P = 0.3
N = 200_000


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(N) + 0.5  # strictly positive, so a zero means "dropped"


def test_rate_zero_is_identity():
    assert isinstance(make_dropout(0.0, "classic"), nn.Identity)


@pytest.mark.parametrize("variant", ["inverted", "classic"])
def test_fraction_zeroed_is_p(variant, x):
    drop = make_dropout(P, variant).train()
    zeroed = (drop(x) == 0).float().mean().item()
    assert abs(zeroed - P) < 0.01


def test_inverted_scales_kept_units_in_training_and_is_identity_in_eval(x):
    drop = make_dropout(P, "inverted")
    out = drop.train()(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / (1 - P))
    torch.testing.assert_close(drop.eval()(x), x)


def test_classic_keeps_units_unscaled_and_scales_at_inference(x):
    drop = ClassicDropout(P)
    out = drop.train()(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept])
    torch.testing.assert_close(drop.eval()(x), x * (1 - P))


def test_gaussian_noise_has_mean_one_and_dropout_variance(x):
    drop = GaussianDropout(P).train()
    noise = drop(x) / x
    assert (noise != 0).all()
    assert abs(noise.mean().item() - 1) < 0.01
    assert abs(noise.var().item() - P / (1 - P)) < 0.01
    torch.testing.assert_close(drop.eval()(x), x)


@pytest.mark.parametrize("variant", ["inverted", "classic", "gaussian"])
def test_expectation_in_training_equals_inference_output(variant):
    torch.manual_seed(1)
    x = torch.rand(64) + 0.5
    drop = make_dropout(P, variant)
    mean_train = drop.train()(x.expand(20_000, -1)).mean(0)
    torch.testing.assert_close(mean_train, drop.eval()(x), rtol=0.03, atol=0.0)


def test_alpha_dropout_keeps_selu_statistics():
    torch.manual_seed(2)
    x = torch.randn(N)
    drop = make_dropout(P, "alpha")
    out = drop.train()(x)
    assert abs(out.mean().item()) < 0.02 and abs(out.std().item() - 1) < 0.02
    # dropped units all land on one value (SELU's negative saturation, affinely corrected)
    _, counts = out.unique(return_counts=True)
    assert counts.max().item() / N == pytest.approx(P, abs=0.01)
    torch.testing.assert_close(drop.eval()(x), x)


@pytest.mark.parametrize("variant", ["inverted", "classic", "gaussian"])
def test_channelwise_drops_whole_feature_maps(variant):
    torch.manual_seed(3)
    x = torch.rand(64, 16, 5, 5) + 0.5
    out = make_dropout(P, variant, channelwise=True).train()(x)
    factor = (out / x).flatten(2)
    # one factor per (sample, channel): constant across the map, different across maps
    assert torch.allclose(factor, factor[..., :1].expand_as(factor))
    assert factor[..., 0].unique().numel() > 1


def test_bad_rate_and_variant_are_refused():
    with pytest.raises(ValueError, match="p=1.0"):
        make_dropout(1.0)
    with pytest.raises(ValueError, match="spatial"):
        make_dropout(0.5, "spatial")
