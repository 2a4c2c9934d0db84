"""Dropout sites of any model: found, set by glob, swapped by variant, max-norm on chosen layers."""

import pytest
import torch
from torch import nn

from droptune.build import build_model, model_sites
from droptune.errors import ConfigError
from droptune.fit import fit
from droptune.inputs import load_data, splits
from droptune.models import GaussianDropout
from droptune.models.max_norm import MaxNorm, max_norm_layers
from droptune.models.sites import walk

CUSTOM = ("model=custom", "model._target_=examples.mynets.nets.SmallConvNet")
DIGITS = ((1, 8, 8), 10)


def custom_model(make_cfg, *overrides: str) -> dict:
    return make_cfg(*CUSTOM, *overrides)["model"]


def test_sites_of_a_users_model_are_found_by_path_and_class(make_cfg):
    net = build_model(custom_model(make_cfg, "+model.p=0.3"), *DIGITS)
    found = {(s.path, s.cls, s.rate) for s in walk(net).settable}
    assert found == {
        ("features.2", "Dropout2d", 0.3),
        ("encoder.drop", "Dropout", 0.3),
        ("head.drop", "Dropout", 0.3),
    }


def test_every_torch_dropout_class_is_a_site():
    kinds = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d]
    kinds += [nn.AlphaDropout, nn.FeatureAlphaDropout]
    net = nn.Sequential(*(kind(0.1) for kind in kinds), nn.ReLU(), GaussianDropout(0.2))
    assert [s.cls for s in walk(net).settable] == [k.__name__ for k in kinds] + ["GaussianDropout"]
    assert [s.path for s in walk(net).settable][-1] == "7"


def test_globs_set_rates_in_order_and_the_built_model_trains_with_them(make_cfg):
    model = custom_model(make_cfg, "model.dropout.sites={*drop:0.1,head.*:0.6}")
    rates = {s.path: s.rate for s in walk(build_model(model, *DIGITS)).settable}
    assert rates == {"features.2": 0.25, "encoder.drop": 0.1, "head.drop": 0.6}  # later wins
    assert model_sites(model, *DIGITS).sites == walk(build_model(model, *DIGITS)).settable


def test_a_glob_that_matches_no_site_names_the_glob_and_lists_the_sites(make_cfg):
    model = custom_model(make_cfg, "model.dropout.sites={decoder.*:0.1}")
    with pytest.raises(ConfigError) as raised:
        model_sites(model, *DIGITS)
    message = str(raised.value)
    assert "decoder.*" in message and "features.2" in message and "head.drop" in message


def test_a_variant_swap_keeps_each_rate_and_its_channel_rule(make_cfg):
    model = custom_model(
        make_cfg, "model.dropout.variant=gaussian", "model.dropout.sites={head.*:0.5}"
    )
    net = build_model(model, *DIGITS)
    assert {(s.path, s.cls, s.rate) for s in walk(net).settable} == {
        ("features.2", "GaussianDropout", 0.25),
        ("encoder.drop", "GaussianDropout", 0.25),
        ("head.drop", "GaussianDropout", 0.5),
    }
    assert net.features[2].channelwise and not net.head.drop.channelwise
    net.train()
    masks = net.features[2](torch.ones(64, 16, 4, 4))
    assert (masks.std(dim=(2, 3)) == 0).all()  # one draw per (sample, channel)


def test_droptunes_own_models_have_sites_too(make_cfg):
    mlp = make_cfg("model.dropout.input=0.2", "model.dropout.sites={net.4:0.3}")["model"]
    rates = [s.rate for s in walk(build_model(mlp, *DIGITS)).settable]
    assert rates == [0.2, 0.3, 0.5]


def test_max_norm_layers_default_to_all_but_the_output_layer_and_follow_globs(make_cfg):
    net = build_model(custom_model(make_cfg), *DIGITS)
    assert max_norm_layers(net, None) == ["features.0", "features.3", "encoder.linear"]
    assert max_norm_layers(net, ["encoder.*", "head.out"]) == ["encoder.linear", "head.out"]
    with pytest.raises(ValueError, match="decoder"):
        max_norm_layers(net, ["decoder"])


def _row_norms(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().flatten(1).norm(dim=1)


def test_max_norm_holds_on_the_chosen_layers_after_training_and_spares_the_last(make_cfg):
    c = 0.3
    cfg = make_cfg(*CUSTOM, f"model.max_norm={c}", "trainer.max_epochs=2", "optim.lr=0.5")
    data = load_data(cfg)
    ((train, val),) = splits(cfg, data)
    net = fit(cfg, data, train, val).module.model
    for path in ("features.0", "features.3", "encoder.linear"):
        assert _row_norms(net.get_submodule(path)).max() <= c + 1e-5, path
    assert _row_norms(net.head.out).max() > c  # unconstrained: it grew past c


def test_max_norm_callable_renorms_rows_of_conv_and_linear_weights():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(100)
    MaxNorm(net, ["0", "2"], 1.0)()
    assert _row_norms(net[0]).max() <= 1.0 + 1e-5 and _row_norms(net[2]).max() <= 1.0 + 1e-5


def test_an_mlp_with_site_globs_trains_on_the_standard_runner(make_cfg):
    from droptune.fused.grouping import fusable

    assert fusable(make_cfg(), [(range(100), range(20))])
    assert not fusable(make_cfg("model.dropout.sites={net.4:0.3}"), [(range(100), range(20))])
