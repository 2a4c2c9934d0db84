"""Search spaces: shipped spaces sample valid configs, conditions hold, bad spaces are refused."""

import copy

import optuna
import pytest

from droptune.build import build_model, model_sites
from droptune.config import validate
from droptune.errors import ConfigError
from droptune.search import apply, hydra_overrides, parse_space, suggest, with_sites
from tests.helpers import CONF

# for_<model>.yaml: the default space of each model group, by name (tune.yaml's search: for_${model})
DEFAULTS = {p.stem.removeprefix("for_"): p for p in (CONF / "search").glob("for_*.yaml")}
SPACES = sorted(p.stem for p in (CONF / "search").glob("*.yaml") if not p.stem.startswith("for_"))
CUSTOM = ["model=custom", "model._target_=examples.mynets.nets.SmallConvNet"]
SETUPS = {
    "sites": ["data=digits", *CUSTOM],
    "mlp_dropout": ["data=digits"],
    "mlp_schedules": ["data=digits"],
    "srivastava": ["data=digits"],
    "mlp_adam_fast": ["data=digits", "optim=adam", "model.depth=2", "model.widths=[512,512]"],
    "cnn_dropout": ["data=digits", "model=cnn"],
    "sonar_dropout": ["experiment=seed004_sonar_hidden"],
}


def sample(cfg, n, seed=0, shape=(1, 8, 8)):
    sites = model_sites(cfg["model"], shape, 10).sites
    space = parse_space(with_sites(cfg["search"], sites), cfg)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        overrides = suggest(trial, space)
        yield trial.params, overrides, apply(cfg, overrides)
        study.tell(trial, 0.0)


def test_every_space_has_a_setup():
    assert set(SPACES) == set(SETUPS)


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_each_model_group_has_a_default_space_that_fits_it(make_cfg, model):
    target = [
        f"model._target_=examples.mynets.{'lit.LitConvNet' if model == 'lightning' else 'nets.SmallConvNet'}"
    ]
    cfg = validate(
        make_cfg(
            "data=digits",
            f"model={model}",
            *(target if model in ("custom", "lightning") else []),
            config="tune",
        )
    )
    expected = {"mlp": "mlp_dropout", "cnn": "cnn_dropout"}.get(model, "sites")
    assert model in DEFAULTS and cfg["search"]["name"] == expected
    params = [p for p, _, _ in sample(cfg, 3)]
    assert all(params)


@pytest.mark.parametrize("name", SPACES)
def test_shipped_spaces_sample_configs_that_validate_and_build(make_cfg, name):
    cfg = validate(make_cfg(f"search={name}", *SETUPS[name], config="tune"))
    shape = (60,) if "sonar" in name else (1, 8, 8)
    sites = model_sites(cfg["model"], shape, 10).sites
    paths = {e["path"] for e in with_sites(cfg["search"], sites).values() if "path" in e}
    for params, overrides, config in sample(cfg, 25, shape=shape):
        validate(config)
        build_model(config["model"], shape, 10)
        assert set(overrides) <= paths
        assert params  # something was sampled


def test_conditional_entries_appear_only_when_their_condition_holds(make_cfg):
    cfg = validate(make_cfg("data=digits", config="tune"))
    seen = {"width_2": 0, "input_rate": 0, "max_norm": 0}
    for params, _, config in sample(cfg, 60, seed=1):
        assert ("width_1" in params) == (params["depth"] >= 2)
        assert ("width_2" in params) == (params["depth"] >= 3)
        assert ("input_rate" in params) == params["input_dropout"]
        assert ("max_norm" in params) == params["max_norm_on"]
        assert len(config["model"]["widths"]) == params["depth"]
        if not params["input_dropout"]:
            assert config["model"]["dropout"]["input"] == 0.0  # `otherwise`
        if not params["max_norm_on"]:
            assert config["model"]["max_norm"] is None
        for key in seen:
            seen[key] += key in params
    assert all(count > 0 for count in seen.values())  # each condition was also true sometimes


def test_apply_rebuilds_indexed_lists_and_leaves_the_base_alone(make_cfg):
    cfg = validate(make_cfg("data=digits", "model.widths=[1,2,3]", "model.depth=3", config="tune"))
    before = copy.deepcopy(cfg)
    config = apply(cfg, {"model.widths.0": 64, "model.depth": 1, "model.dropout.hidden.1": 0.2})
    assert config["model"]["widths"] == [64]
    assert config["model"]["dropout"]["hidden"] == [None, 0.2]
    assert cfg == before
    overrides = {"model.widths.0": 64, "optim.lr": 0.1, "model.max_norm": None}
    assert hydra_overrides(apply(cfg, overrides), overrides) == [
        "model.widths=[64]",
        "optim.lr=0.1",
        "model.max_norm=null",
    ]


BAD_SPACES = [
    ({"lr": {"path": "optim.lr", "type": "float", "low": 0.5, "high": 0.1}}, "search.space.lr.low"),
    (
        {"lr": {"path": "optim.lrate", "type": "float", "low": 0.1, "high": 0.5}},
        "search.space.lr.path",
    ),
    (
        {"lr": {"path": "optim.lr", "type": "normal", "low": 0.1, "high": 0.5}},
        "search.space.lr.type",
    ),
    ({"lr": {"path": "optim.lr", "type": "float", "low": 0.1, "hgh": 0.5}}, "search.space.lr.hgh"),
    (
        {
            "lr": {
                "path": "optim.lr",
                "type": "float",
                "low": 0.1,
                "high": 0.5,
                "when": {"on": True},
            }
        },
        "search.space.lr.when",
    ),
    (
        {"lr": {"path": "optim.lr", "type": "float", "low": 0.0, "high": 0.5, "log": True}},
        "search.space.lr.low",
    ),
    (
        {"d": {"path": "data.name", "type": "categorical", "choices": ["mnist"]}},
        "search.space.d.path",
    ),
    (
        {"v": {"path": "model.dropout.variant", "type": "categorical", "choices": []}},
        "search.space.v.choices",
    ),
]


@pytest.mark.parametrize("space, key", BAD_SPACES, ids=[k for _, k in BAD_SPACES])
def test_bad_spaces_are_refused_naming_the_entry(make_cfg, space, key):
    cfg = validate(make_cfg("data=digits", config="tune"))
    with pytest.raises(ConfigError) as error:
        parse_space(space, cfg)
    assert error.value.key == key
