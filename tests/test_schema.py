"""The typed schema: strict values, unknown keys with "did you mean", one line per problem, and
each default in one place (its group's YAML file)."""

import typing

import pytest
import yaml
from pydantic import BaseModel

from droptune.config import validate
from droptune.config.data import Data
from droptune.config.model import Model
from droptune.config.training import Optim, Paths, Tracking, Trainer
from droptune.config.tune import Search, Study
from droptune.config.types import Open
from droptune.errors import ConfigError
from tests.helpers import CONF

# the files of each droptune-owned group, and the schema(s) their keys must match
GROUP_FILES = {
    "data": Data,
    "model": Model,
    "optim": Optim,
    "trainer": Trainer,
    "tracking": Tracking,
    "paths": Paths,
    "study": Study,
    "search": Search,
}


def error_of(make_cfg, *overrides: str, config: str = "train") -> ConfigError:
    with pytest.raises(ConfigError) as error:
        validate(make_cfg(*overrides, config=config))
    message = str(error.value)
    assert message.startswith(f"{error.value.key}=") and "\n" not in message
    return error.value


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("+model.dropout.hiden=0.3", "model.dropout.hiden", "did you mean model.dropout.hidden?"),
        ("+optim.weight_decy=0", "optim.weight_decy", "did you mean optim.weight_decay?"),
        ("+data.batchsize=32", "data.batchsize", "did you mean data.batch_size?"),
        ("+tracking.experment=x", "tracking.experment", "did you mean tracking.experiment?"),
        ("+seeed=3", "seeed", "did you mean seed?"),
    ],
)
def test_a_key_a_group_does_not_have_gets_the_nearest_one(make_cfg, override, key, hint):
    # `+` adds the key past Hydra's own check, as an experiment file or a library caller would
    error = error_of(make_cfg, override)
    assert error.key == key and hint in error.allowed


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("model.width=true", "model.width", True),  # a bool is not a width
        ("model.dropout.hidden='0.5'", "model.dropout.hidden", "0.5"),  # a string is not a rate
        ("model.dropout.input=nan", "model.dropout.input", None),  # NaN: checked below
        ("model.widths=[64,0]", "model.widths[1]", 0),  # an element: its own value
        ("model.dropout.hidden=[0.2,inf]", "model.dropout.hidden[1]", None),
        ("seed=1.5", "seed", 1.5),
        ("evaluate_test=1", "evaluate_test", 1),
        ("optim.betas=[0.9]", "optim.betas", [0.9]),
    ],
)
def test_values_are_strict(make_cfg, override, key, value):
    extra = ["optim=adam"] if "betas" in override else []
    error = error_of(make_cfg, *extra, override)
    assert error.key == key
    if value is not None:
        assert error.value == value
    else:
        assert error.value != error.value or abs(error.value) == float("inf")  # nan or inf


def test_a_variant_key_names_the_variants(make_cfg):
    error = error_of(make_cfg, "model.family=resnet")
    assert error.key == "model.family" and error.value == "resnet"
    assert error.allowed == "one of mlp, cnn, custom, lightning"


def test_a_key_of_another_variant_is_refused(make_cfg):
    # SGD's momentum means nothing to Adam: set where it would be silently ignored
    error = error_of(make_cfg, "optim=adam", "+optim.momentum=0.9")
    assert error.key == "optim.momentum" and "a key of optim" in error.allowed


def test_an_unset_mandatory_value_is_named(make_cfg):
    error = error_of(make_cfg, "data=image_folder")
    assert (error.key, error.value) == ("data.root", "???")


def test_study_checks_across_keys(make_cfg):
    error = error_of(
        make_cfg, "study.heartbeat_interval=60", "study.grace_period=30", config="tune"
    )
    assert error.key == "study.grace_period" and "heartbeat_interval" in error.allowed
    error = error_of(make_cfg, "+search.sites=all", config="tune")  # mlp_dropout has no site range
    assert error.key == "search.site_rate"


def test_a_space_entry_is_named_where_it_sits(make_cfg):
    error = error_of(make_cfg, "search.space.lr.low=0.5", "search.space.lr.high=0.1", config="tune")
    assert error.key == "search.space.lr.low" and "<= high" in error.allowed
    error = error_of(make_cfg, "search.space.depth.type=normal", config="tune")
    assert error.key == "search.space.depth.type"


def test_a_checked_config_keeps_what_was_written(make_cfg):
    target = "model._target_=examples.mynets.nets.PlainMLP"
    cfg = make_cfg("search=sites", "model=custom", target, config="tune")
    checked = validate(cfg)
    assert checked == cfg  # nothing dropped, nothing added: every key came from a group file
    entry = checked["search"]["space"]["lr"]
    assert "otherwise" not in entry  # a space entry keeps its absent keys absent


def _variants(annotation) -> list[type[BaseModel]]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    members = typing.get_args(args[0]) or (args[0],)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]


def _required(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items() if f.is_required()}


@pytest.mark.parametrize("group", sorted(GROUP_FILES))
def test_each_default_lives_in_one_place(group):
    """A key its group files set is required by the schema: the file is where its default
    lives. The schema defaults only what a file may leave out, and only to null."""
    models = _variants(GROUP_FILES[group])
    for model in models:
        for name, field in model.model_fields.items():
            if not field.is_required():
                assert field.default is None, f"{model.__name__}.{name} defaults to {field.default}"
    for path in (CONF / group).glob("*.yaml"):
        keys = set(yaml.safe_load(path.read_text())) - {"defaults"}
        if not keys:
            continue  # a file of defaults only (for_custom.yaml: the sites space)
        fits = [
            m
            for m in models
            if _required(m) <= keys
            and (issubclass(m, Open) or keys <= set(m.model_fields) | _aliases(m))
        ]
        assert fits, f"{path.name}: no schema of {group} has exactly its keys"


def _aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias for f in model.model_fields.values() if f.alias}
