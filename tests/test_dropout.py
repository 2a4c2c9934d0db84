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


def in_whole_blocks(dropped: torch.Tensor, size: int) -> bool:
    """Every dropped cell lies in a size x size square of dropped cells inside its feature map."""
    as_float = dropped.float()
    # a square's top-left corner where all size*size cells are dropped (a min-pool, valid)
    full = -nn.functional.max_pool2d(-as_float, size, stride=1)
    covered = nn.functional.max_pool2d(
        nn.functional.pad(full, [size - 1] * 4), size, stride=1
    )  # every cell of such a square
    return bool(torch.equal(covered.bool(), dropped))


def test_dropblock_drops_whole_squares_of_its_size_at_about_its_rate():
    from droptune.models.nets import CNN, Dropout

    torch.manual_seed(0)
    net = CNN((1, 28, 28), 10, [8, 8], dropout=Dropout(conv=0.2, conv_mode="block", block_size=3))
    sites = [m for m in net.features if type(m).__name__ == "DropBlock2d"]
    assert len(sites) == 2 and all(site.block_size == 3 for site in sites)
    for side, site in zip((14, 7), sites, strict=True):  # the maps after each block's pooling
        x = torch.rand(512, 8, side, side) + 0.5
        out = site.train()(x)
        dropped = out == 0
        assert in_whole_blocks(dropped, 3)
        assert not in_whole_blocks(nn.functional.dropout(x, 0.2) == 0, 3)  # the check can fail
        # the paper's seed rate counts each block's cells once; overlapping blocks drop a little less
        assert 0.15 < dropped.float().mean().item() <= 0.21
        kept = ~dropped
        scale = out[kept] / x[kept]  # what is kept is rescaled by the kept fraction, in one factor
        torch.testing.assert_close(scale, torch.full_like(scale, 1 / kept.float().mean().item()))
        torch.testing.assert_close(site.eval()(x), x)
    small = CNN((1, 8, 8), 10, [4, 4], dropout=Dropout(conv=0.2, conv_mode="block", block_size=5))
    fitted = [m.block_size for m in small.features if type(m).__name__ == "DropBlock2d"]
    assert fitted == [3, 1]  # 4x4 then 2x2 maps: the widest odd block each one holds


def test_dropconnect_zeroes_single_weights_at_its_rate_and_evaluates_with_the_weights():
    from droptune.models.dropout import stored_weight
    from droptune.models.nets import MLP, Dropout

    torch.manual_seed(0)
    net = MLP(64, 10, [256], dropout=Dropout(hidden=P, variant="dropconnect"))
    hidden, output = net.hidden_linears[0], net.net[-1]
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())  # no unit is dropped
    assert stored_weight(hidden) is hidden.weight  # input rate 0: the first layer is plain
    kept = stored_weight(output)
    net.train()
    drawn = output.weight  # one draw of the output layer's weights (the hidden rate's)
    dropped = drawn == 0
    assert abs(dropped.float().mean().item() - P) < 0.02
    assert not dropped.all(0).any() and not dropped.all(1).any()  # weights, not whole units
    torch.testing.assert_close(drawn[~dropped], kept[~dropped] / (1 - P))
    x = torch.rand(8, 64)
    units = net.net[:-1](x)
    mean = torch.stack([output(units) for _ in range(4000)]).mean(0)
    net.eval()
    torch.testing.assert_close(output.weight, kept)  # evaluation: the weights themselves
    torch.testing.assert_close(mean, output(units), atol=0.03, rtol=0.05)  # their expectation


def test_max_norm_under_dropconnect_constrains_the_stored_weights():
    from droptune.models.dropout import stored_weight
    from droptune.models.nets import MLP, Dropout

    net = MLP(64, 10, [32, 32], dropout=Dropout(hidden=0.5, variant="dropconnect"), max_norm=0.5)
    net.apply_max_norm()
    for layer in net.hidden_linears:
        assert stored_weight(layer).norm(dim=1).max().item() <= 0.5 + 1e-6


def test_concrete_dropout_is_a_relaxed_mask_with_a_learnable_rate_and_off_in_eval(x):
    from droptune.models.dropout import ConcreteDropout

    site = ConcreteDropout(P)
    assert site.p == pytest.approx(P)
    out = site.train()(x)
    mean_kept = (out / x * (1 - P)).mean().item()  # 1 - (relaxed) mask, on average 1 - p
    assert abs(mean_kept - (1 - P)) < 0.01
    out.sum().backward()
    assert site.logit.grad is not None and site.logit.grad != 0  # the rate is learned
    torch.testing.assert_close(site.eval()(x), x)
    regularization = {}
    for rate in (0.1, 0.5, 0.9):  # minus the entropy per unit: lowest at 0.5
        site.p = rate
        regularization[rate] = site.regularization().item()
    assert regularization[0.5] < min(regularization[0.1], regularization[0.9])


def test_a_concrete_fit_learns_each_sites_rate_logged_every_epoch(make_cfg):
    from droptune.fit import fit
    from droptune.inputs import load_data, splits

    cfg = make_cfg(
        "data=digits", "model.width=64", "model.dropout.hidden=0.1", "model.dropout.input=0.2",
        "model.dropout.variant=concrete", "trainer.max_epochs=6", "trainer.accelerator=cpu",
    )  # fmt: skip
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    history = fit(cfg, arrays, train_index, val_index).history
    sites = [key for key in history[0] if key.startswith("rate/")]
    assert len(sites) == 3  # input and both hidden layers
    for key in sites:
        curve = [epoch[key] for epoch in history]
        assert all(0 < rate < 1 for rate in curve)
        start = 0.2 if key == sites[0] else 0.1
        assert abs(curve[-1] - start) > 1e-3  # moved under training


def test_concrete_rates_are_learned_not_scheduled(make_cfg):
    from droptune.config import validate
    from droptune.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        validate(make_cfg("model.dropout.variant=concrete", "model.dropout.schedule.kind=late"))
    assert error.value.key == "model.dropout.schedule.kind"


def test_a_users_model_gets_concrete_sites_where_its_dropout_is_on(make_cfg):
    from droptune.build import model_sites

    cfg = make_cfg(
        "data=digits", "model=custom", "model._target_=examples.mynets.nets.SmallConvNet",
        "+model.p=0.0", "model.dropout.sites={head.drop:0.5}", "model.dropout.variant=concrete",
    )  # fmt: skip
    sites = {s.path: s for s in model_sites(cfg["model"], (1, 8, 8), 10).sites}
    assert sites["head.drop"].cls == "ConcreteDropout" and sites["head.drop"].rate == 0.5
    off = [s for s in sites.values() if s.rate == 0]
    assert len(off) == 2 and all(s.cls != "ConcreteDropout" for s in off)  # at 0: stays off
