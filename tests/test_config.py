"""Every shipped config composes and validates; each bad value gets one error naming key and value."""

import math
from pathlib import Path

import pytest

from droptune.build import build_model, build_optim
from droptune.config import validate
from droptune.errors import ConfigError
from tests.helpers import CONF

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))
IMAGE_SHAPES = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "digits": (1, 8, 8),
    "image_folder": (3, 16, 16),
    "custom": (1, 8, 8),
}


def test_experiments_exist():
    assert {"seed000_mnist", "seed001_d2l_fashion", "seed004_sonar_hidden"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_presets_compose_validate_and_build(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)
    shape = IMAGE_SHAPES.get(cfg["data"]["name"], (60,))
    net = build_model(cfg["model"], shape, 10)
    assert sum(p.numel() for p in net.parameters()) > 0
    build_optim(cfg["optim"])


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_data_and_model_groups_compose(make_cfg, data, model):
    extra = {
        "csv": ["data.path=x.csv", "data.target=y"],
        "custom": ["data._target_=examples.mynets.data.DigitsData"],
        "image_folder": ["data.root=leaves"],
    }.get(data, [])
    cfg = make_cfg(f"data={data}", f"model={model}", *extra)
    if model == "cnn" and data not in IMAGE_SHAPES:
        with pytest.raises(ConfigError, match="model='cnn'.*image dataset"):
            validate(cfg)
        return
    validate(cfg)
    net = build_model(cfg["model"], IMAGE_SHAPES.get(data, (7,)), 3)
    assert net is not None


@pytest.mark.parametrize("optim", OPTIMS)
def test_optim_groups_build(make_cfg, optim):
    cfg = make_cfg(f"optim={optim}")
    validate(cfg)
    assert build_optim(cfg["optim"]).name == optim


def test_paths_follow_root_and_env(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg()
    assert cfg["tracking"]["uri"] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert cfg["paths"]["data_dir"] == f"{tmp_path}/data"
    monkeypatch.setenv("DROPTUNE_DATA_DIR", "/elsewhere")
    assert make_cfg()["paths"]["data_dir"] == "/elsewhere"


def test_width_times_depth_or_per_layer_widths(make_cfg):
    net = build_model(make_cfg("model.width=7", "model.depth=3")["model"], (1, 8, 8), 10)
    assert [m.out_features for m in net.hidden_linears] == [7, 7, 7]
    net = build_model(make_cfg("model.widths=[9,5]")["model"], (1, 8, 8), 10)
    assert [m.out_features for m in net.hidden_linears] == [9, 5]
    assert net.hidden_linears[0].in_features == math.prod((1, 8, 8))


BAD = [
    ("model.dropout.hidden=1.0", "model.dropout.hidden", "[0, 1)"),
    ("model.dropout.hidden=[0.5,1.5]", "model.dropout.hidden[1]", "[0, 1)"),
    ("model.dropout.hidden=[0.5,0.5,0.5]", "model.dropout.hidden", "list of 2 rates"),
    ("model.dropout.input=-0.1", "model.dropout.input", "[0, 1)"),
    ("model.dropout.placement=middle", "model.dropout.placement", "after, before"),
    ("model.dropout.variant=spatial", "model.dropout.variant", "inverted, classic"),
    ("model.width=0", "model.width", "integer >= 1"),
    ("model.widths=[64,0]", "model.widths[1]", "integer >= 1"),
    ("model.activation=swish", "model.activation", "relu"),
    ("model.max_norm=-3", "model.max_norm", "> 0 or null"),
    ("data.name=cifar", "data.name", "mnist, fashion_mnist, sonar, digits, csv"),
    ("data.val_fraction=1.5", "data.val_fraction", "(0, 1)"),
    ("data.cv_folds=1", "data.cv_folds", "integer >= 2"),
    ("data.batch_size=0", "data.batch_size", "integer >= 1"),
    ("optim.name=rmsprop", "optim.name", "sgd, adam, adamw"),
    ("optim.lr=0", "optim.lr", "> 0"),
    ("optim.momentum=1.2", "optim.momentum", "[0, 1)"),
    ("optim.schedule=step", "optim.schedule", "none, cosine, exponential"),
    ("trainer.max_epochs=0", "trainer.max_epochs", "integer >= 1"),
]


@pytest.mark.parametrize("override, key, allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_key_value_and_what_is_allowed(make_cfg, override, key, allowed):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert error.value.key == key
    message = str(error.value)
    assert message.startswith(f"{key}=") and allowed in message and "\n" not in message


def test_dropblock_takes_an_odd_block_size(make_cfg):
    validate(make_cfg("model=cnn", "model.dropout.conv_mode=block", "model.dropout.block_size=5"))
    with pytest.raises(ConfigError) as error:
        validate(
            make_cfg("model=cnn", "model.dropout.conv_mode=block", "model.dropout.block_size=4")
        )
    assert error.value.key == "model.dropout.block_size" and "odd" in str(error.value)


def test_dropconnect_is_refused_where_it_has_no_layer_to_act_on(make_cfg):
    validate(make_cfg("model.dropout.variant=dropconnect"))
    with pytest.raises(ConfigError) as error:
        validate(make_cfg("model.dropout.variant=dropconnect", "model.dropout.output=0.2"))
    assert error.value.key == "model.dropout.output"
    user = ("model=custom", "model._target_=examples.mynets.nets.SmallConvNet")
    with pytest.raises(ConfigError) as error:
        validate(make_cfg(*user, "model.dropout.variant=dropconnect"))
    assert error.value.key == "model.dropout.variant"
    assert str(error.value).endswith("one of inverted, classic, gaussian, alpha, concrete")


def test_csv_needs_path_and_target(make_cfg):
    with pytest.raises(ConfigError, match="data.path=None"):
        validate(make_cfg("data=csv"))
    with pytest.raises(ConfigError, match="data.target=None"):
        validate(make_cfg("data=csv", f"data.path={Path(__file__)}"))


def test_evaluate_test_needs_a_test_set(make_cfg):
    with pytest.raises(ConfigError, match="evaluate_test"):
        validate(make_cfg("data.test_fraction=0", "evaluate_test=true"))
