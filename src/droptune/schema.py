"""The typed schema of every config group droptune owns, and the one adapter to ConfigError.

pydantic v2 rather than Hydra's dataclass schemas: OmegaConf's structured configs cannot hold a
union such as "a rate, or a list of one rate per layer", nor a range, so the checks would stay
hand-written. Here each group's variant (data by `name`, model by `family`, optim by `name`) is
one model; each constrained type carries the words a user sees (`Allowed`); values are strict
(`true` is not a width, "0.5" is not a rate); a key a droptune-owned group does not have is an
error with "did you mean". The group's YAML file is the one place each default lives: a key every
file of its group sets is required here, and the schema defaults only what no group file sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import lightning as L
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from droptune import targets
from droptune.data.datasets import DATASETS
from droptune.errors import ConfigError, unknown_key
from droptune.lit import OPTIMIZERS, SCHEDULES
from droptune.models import ACTIVATIONS, PLACEMENTS, VARIANTS
from droptune.models.nets import hidden_widths
from droptune.models.stacked import STORAGE_DTYPES

IMAGE_DATASETS = ("mnist", "fashion_mnist", "digits", "image_folder")
DATA_NAMES = (*DATASETS, "image_folder", "custom")
OWN_FAMILIES = ("mlp", "cnn")  # droptune's models: their config keys are their arguments
USER_FAMILIES = ("custom", "lightning")  # a user's nn.Module / LightningModule
FAMILIES = OWN_FAMILIES + USER_FAMILIES
SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc", "grid")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
METRICS = {
    "val/acc_best": "maximize",
    "val/acc": "maximize",
    "val/loss": "minimize",
    "cv/acc_mean": "maximize",
    "cv/acc_best_mean": "maximize",
}
# which key picks a group's variant; pydantic puts the variant's tag into an error's location
VARIANT_KEYS = {"data": "name", "model": "family", "optim": "name"}
SPACE_TYPES = ("float", "int", "categorical")
CONDITIONS = ("ge", "gt", "in", "le", "lt", "ne")  # search.OPERATORS implements them


# --- constrained types, each with the words its error shows ------------------------------------


def _explained(error: ValidationError, text: str) -> PydanticCustomError:
    """pydantic's first complaint in droptune's words: an inner droptune error (a list element)
    keeps its own words, its own value and says where it is (`[1]`); anything else reads `text`."""
    first = error.errors()[0]
    if first["type"] != "droptune":
        context = {"allowed": text, "at": "", "value": first["input"]}
    else:
        inner = first["ctx"]
        at = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
        value = inner["value"] if inner["at"] else first["input"]
        context = {"allowed": inner["allowed"], "at": at + inner["at"], "value": value}
    return PydanticCustomError("droptune", "{allowed}", context)


def Allowed(text: str) -> WrapValidator:  # noqa: N802 (reads as part of a type annotation)
    """Whatever pydantic finds wrong inside, the user reads `text`."""

    def check(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            raise _explained(error, text) from None

    return WrapValidator(check)


def one_of(choices: Sequence[Any], text: str | None = None) -> Any:
    return Annotated[
        Literal[tuple(choices)],  # type: ignore[valid-type]
        Allowed(text or f"one of {', '.join(map(str, choices))}"),
    ]


def _finite(**bounds: float) -> Any:
    return Annotated[float, Field(allow_inf_nan=False, **bounds)]


Rate = Annotated[_finite(ge=0, lt=1), Allowed("a dropout rate in [0, 1)")]
PositiveInt = Annotated[int, Field(ge=1), Allowed("an integer >= 1")]
Positive = Annotated[_finite(gt=0), Allowed("a number > 0")]
PositiveOrNull = Annotated[_finite(gt=0) | None, Allowed("a number > 0 or null")]
Fraction = Annotated[_finite(gt=0, lt=1), Allowed("a fraction in (0, 1)")]
TestFraction = Annotated[_finite(ge=0, lt=1), Allowed("a fraction in [0, 1)")]
Momentum = Annotated[_finite(ge=0, lt=1), Allowed("a number in [0, 1)")]
IntList = Annotated[
    list[PositiveInt], Field(min_length=1), Allowed("a non-empty list of integers >= 1")
]
Globs = Annotated[list[str] | None, Allowed("null or a list of module-path globs")]
Seconds = Annotated[int, Field(ge=1), Allowed("whole seconds >= 1")]
Compile = Annotated[Literal["auto"] | bool, Allowed("auto (on a GPU), true or false")]


def _set(value: str) -> str:
    if value == "???":  # Hydra's mandatory value, left unset
        raise ValueError("unset")
    return value


def _given(text: str) -> Any:
    """A string the config must set."""
    return Annotated[str, Field(min_length=1), AfterValidator(_set), Allowed(text)]


def _one_or_per_layer(value: Any, handler: Any) -> Any:
    """A rate for every layer, or a list with one per layer (pydantic's own union would report
    both members' complaints)."""
    adapter = _RATE_LIST if isinstance(value, list) else _RATE
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise _explained(error, "") from None


_STRICT = ConfigDict(strict=True)
_RATE = TypeAdapter(Rate, config=_STRICT)
_RATE_LIST = TypeAdapter(
    Annotated[list[Rate], Allowed("a list of dropout rates in [0, 1)")], config=_STRICT
)
Rates = Annotated[Any, WrapValidator(_one_or_per_layer)]


class Group(BaseModel):
    """A config group droptune owns: strict values, no unknown keys, read-only once checked."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


class Open(Group):
    """A group whose other keys are someone else's arguments (a user's class, Lightning's Trainer)."""

    model_config = ConfigDict(extra="allow")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


# --- data --------------------------------------------------------------------------------------


class DataBase(Group):
    batch_size: PositiveInt
    val_fraction: Fraction
    cv_folds: Annotated[
        Annotated[int, Field(ge=2)] | None,
        Allowed("null (one train/val split) or an integer >= 2"),
    ]


class Downloaded(DataBase):
    """MNIST and Fashion-MNIST: their own test set, so no test_fraction."""

    name: Literal["mnist", "fashion_mnist"]
    mirrors: list[str]
    standardize: bool


class Sonar(DataBase):
    name: Literal["sonar"]
    mirrors: list[str]
    test_fraction: TestFraction
    standardize: bool


class Digits(DataBase):
    name: Literal["digits"]
    test_fraction: TestFraction
    standardize: bool


class Csv(DataBase):
    name: Literal["csv"]
    path: Annotated[str | None, Allowed("the path of a CSV file")]
    target: Annotated[str | None, Allowed("the label column's name")]
    features: Annotated[list[str] | None, Allowed("null (every other column) or a list of names")]
    test_fraction: TestFraction
    standardize: bool

    @model_validator(mode="after")
    def _path_and_target(self) -> Csv:
        _check(bool(self.path), "data.path", self.path, "the path of a CSV file")
        _check(bool(self.target), "data.target", self.target, "the label column's name")
        return self


ImageSize = Annotated[
    PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None,
    Allowed("[height, width], one int >= 1, or null"),
]


class ImageFolder(DataBase):
    name: Literal["image_folder"]
    root: _given("a folder of class folders")
    image_size: ImageSize
    mode: one_of(("RGB", "L"))
    max_resident_bytes: Annotated[PositiveInt | None, Allowed("an integer >= 1 or null")]
    num_workers: Annotated[int, Field(ge=0), Allowed("an integer >= 0")]
    test_fraction: TestFraction
    standardize: bool


class CustomData(Open):
    """A user's LightningDataModule: every key but these is an argument of its `_target_`."""

    target: Annotated[_given("a dotted path to a class or function"), Field(alias="_target_")]
    name: Literal["custom"]
    batch_size: PositiveInt
    input_shape: Annotated[IntList | None, Allowed("null or a non-empty list of integers >= 1")]
    n_classes: Annotated[PositiveInt | None, Allowed("an integer >= 1 or null")]
    val_fraction: Fraction
    test_fraction: TestFraction
    cv_folds: Annotated[None, Allowed("null: a user's DataModule splits its own data")]

    @field_validator("target")
    @classmethod
    def _imports(cls, target: str) -> str:
        targets.resolve("data._target_", target)
        return target


Data = Annotated[
    Downloaded | Sonar | Digits | Csv | ImageFolder | CustomData, Discriminator("name")
]


# --- model -------------------------------------------------------------------------------------

SiteRates = Annotated[
    dict[str, Rate] | None, Allowed("a mapping of module-path globs to dropout rates, or null")
]
Variant = one_of(VARIANTS)


class MlpDropout(Group):
    input: Rate
    hidden: Rates
    output: Rate
    placement: one_of(PLACEMENTS)
    variant: Variant
    sites: SiteRates


class CnnDropout(MlpDropout):
    conv: Rates
    conv_mode: one_of(("element", "channel"))


def _per_layer(key: str, rates: Any, n_layers: int) -> None:
    if isinstance(rates, list):
        _check(len(rates) == n_layers, key, rates, f"a list of {n_layers} rates (one per layer)")


class OwnModel(Group):
    target: Annotated[str, Field(alias="_target_")]
    activation: one_of(tuple(ACTIVATIONS))
    max_norm: PositiveOrNull
    init_std: PositiveOrNull


class Mlp(OwnModel):
    family: Literal["mlp"]
    depth: Annotated[PositiveInt | None, Allowed("an integer >= 1")]
    width: Annotated[PositiveInt | None, Allowed("an integer >= 1")]
    widths: Annotated[IntList | None, Allowed("null or a non-empty list of integers >= 1")]
    dropout: MlpDropout

    @model_validator(mode="after")
    def _layers(self) -> Mlp:
        if self.widths is not None:
            n = len(self.widths)
            ok = self.depth in (None, n)
            _check(ok, "model.depth", self.depth, f"the length of model.widths ({n}), or null")
        else:
            _check(self.depth is not None, "model.depth", self.depth, "an integer >= 1")
            _check(self.width is not None, "model.width", self.width, "an integer >= 1")
        n_hidden = len(hidden_widths(self.depth, self.width, self.widths))
        _per_layer("model.dropout.hidden", self.dropout.hidden, n_hidden)
        return self


class Cnn(OwnModel):
    family: Literal["cnn"]
    channels: IntList
    kernel_size: PositiveInt
    pool: one_of(("max", "avg"))
    head_widths: IntList
    dropout: CnnDropout

    @model_validator(mode="after")
    def _layers(self) -> Cnn:
        _per_layer("model.dropout.conv", self.dropout.conv, len(self.channels))
        _per_layer("model.dropout.hidden", self.dropout.hidden, len(self.head_widths))
        return self


class UserDropout(Group):
    sites: SiteRates
    variant: Annotated[Variant | None, Allowed(f"null or one of {', '.join(VARIANTS)}")]


class UserModel(Open):
    """A user's nn.Module (custom) or LightningModule (lightning): every key but these four is
    an argument of its `_target_`."""

    target: Annotated[_given("a dotted path to a class or function"), Field(alias="_target_")]
    family: Literal["custom", "lightning"]
    dropout: UserDropout
    max_norm: PositiveOrNull
    max_norm_layers: Globs

    @field_validator("target")
    @classmethod
    def _imports(cls, target: str) -> str:
        targets.resolve("model._target_", target)
        return target


USER_MODEL_KEYS = ("family", "dropout", "max_norm", "max_norm_layers")  # droptune's, not _target_'s
Model = Annotated[Mlp | Cnn | UserModel, Discriminator("family")]


# --- optim -------------------------------------------------------------------------------------


class MomentumRamp(Group):
    start: Momentum
    end: Momentum
    epochs: PositiveInt


class OptimBase(Group):
    lr: Positive
    weight_decay: Annotated[_finite(ge=0), Allowed("a number >= 0")]
    schedule: one_of(SCHEDULES)
    gamma: Annotated[_finite(gt=0, le=1), Allowed("a decay factor in (0, 1]")]
    momentum_ramp: MomentumRamp | None


class Sgd(OptimBase):
    name: Literal["sgd"]
    momentum: Momentum
    nesterov: bool


class Adam(OptimBase):
    name: Literal["adam", "adamw"]
    betas: Annotated[
        list[Momentum], Field(min_length=2, max_length=2), Allowed("[beta1, beta2] in [0, 1)")
    ]


Optim = Annotated[Sgd | Adam, Discriminator("name")]


# --- training, tracking, paths -----------------------------------------------------------------


class Trainer(Open):
    """Keyword arguments of lightning.Trainer; droptune reads these."""

    accelerator: str
    max_epochs: PositiveInt


class Tracking(Group):
    uri: _given("an MLflow tracking URI (sqlite:///..., http://host:5000)")
    artifact_root: str | None
    experiment: _given("an MLflow experiment name")
    run_name: str | None


class Paths(Group):
    root_dir: str
    data_dir: str
    output_dir: str


# --- search ------------------------------------------------------------------------------------

Number = Annotated[_finite(), Allowed("a number")]


class SpaceEntry(Group):
    """One dimension of a search space; what needs the composed config (does the path exist, are
    `when` names earlier entries) is checked by `search.parse_space`."""

    type: one_of(SPACE_TYPES)
    path: str | None = None
    low: Number | None = None
    high: Number | None = None
    log: bool = False
    step: Annotated[_finite(gt=0) | None, Allowed("a number > 0")] = None
    choices: list[Any] = []
    when: dict[str, Any] = {}
    otherwise: Any = None  # used only when set (`"otherwise" in entry.model_fields_set`)

    @model_validator(mode="after")
    def _bounds(self) -> SpaceEntry:
        for ref, condition in self.when.items():
            ok = not isinstance(condition, Mapping) or (
                len(condition) == 1 and set(condition) <= set(CONDITIONS)
            )
            _check(ok, f"when.{ref}", condition, f"one of {list(CONDITIONS)}")
        if self.type == "categorical":
            _check(bool(self.choices), "choices", self.choices, "a non-empty list")
            return self
        _check(self.low is not None, "low", self.low, "a number")
        _check(self.high is not None, "high", self.high, "a number")
        _check(self.low <= self.high, "low", self.low, f"a number <= high ({self.high})")
        _check(not self.log or self.low > 0, "low", self.low, "a number > 0 when log is true")
        ok = self.step is None or not self.log
        _check(ok, "step", self.step, "a number > 0, and only without log")
        whole = all(float(v).is_integer() for v in (self.low, self.high))
        _check(self.type != "int" or whole, "low", self.low, "integer bounds for an int entry")
        return self

    def grid(self, name: str) -> list[Any]:
        """Every value, for the grid sampler: categorical choices or stepped ranges."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(
                f"search.space.{name}.step", None, "a step (the grid sampler needs one)"
            )
        count = int(round((self.high - self.low) / self.step)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


class SiteRateRange(Group):
    low: Rate
    high: Rate


class Search(Group):
    name: str
    space: dict[str, dict[str, Any]]  # kept as written: a key left out means something (otherwise)
    sites: Annotated[
        Literal["all"] | Annotated[list[str], Field(min_length=1)] | None,
        Allowed("all, or a non-empty list of module-path globs"),
    ] = None
    site_rate: SiteRateRange | None = None

    @field_validator("space")
    @classmethod
    def _entries(cls, space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, raw in space.items():
            space_entry(name, raw)
        return space

    @model_validator(mode="after")
    def _site_range(self) -> Search:
        _check(
            self.sites is None or self.site_rate is not None,
            "search.site_rate",
            None,
            "a range {low: RATE, high: RATE} for the sites' rates when search.sites is set "
            "(search=sites has one)",
        )
        return self


# --- study -------------------------------------------------------------------------------------


class Fused(Group):
    k: Annotated[int, Field(ge=1), Allowed("an integer >= 1: trials trained together in one fit")]
    compile: Compile
    precision: one_of(STORAGE_DTYPES)
    checkpoint_interval: Annotated[
        _finite(ge=0) | None, Allowed("seconds >= 0 between a group's saves, or null: never")
    ]


class Study(Group):
    name: Annotated[
        str,
        Field(min_length=1),
        Allowed("a non-empty string (quote names Hydra reads as numbers: study.name='\"1e3\"')"),
    ]
    storage: Annotated[
        str | None,
        Allowed("a storage URL (sqlite:///..., postgresql+psycopg://...) or a journal file path"),
    ]
    pool_size: PositiveInt
    direction: one_of(("maximize", "minimize"), "maximize or minimize")
    metric: str | None
    n_trials: Annotated[int, Field(ge=1), Allowed("an integer >= 1 (the study's total budget)")]
    timeout: Annotated[_finite(gt=0) | None, Allowed("seconds > 0, or null")]
    sampler: one_of(SAMPLERS)
    sampler_args: dict[str, Any]
    pruner: one_of(PRUNERS)
    pruner_args: dict[str, Any]
    allow_changes: bool
    heartbeat_interval: Seconds
    grace_period: Seconds
    max_retry: Annotated[int, Field(ge=0), Allowed("an integer >= 0")]
    checkpoint_dir: str | None
    runner: one_of(("standard", "fused"), "standard or fused")
    fused: Fused

    @model_validator(mode="after")
    def _storage_and_heartbeats(self) -> Study:
        _check(
            bool(self.storage),
            "study.storage",
            self.storage,
            "a storage URL (sqlite:///..., postgresql+psycopg://...) or a journal file path; "
            "with study=postgres, export DROPTUNE_STORAGE=postgresql+psycopg://user:pass@host/db",
        )
        ok = self.grace_period > self.heartbeat_interval
        _check(ok, "study.grace_period", self.grace_period, "more than study.heartbeat_interval")
        return self


class Bench(Group):
    epochs: PositiveInt
    reference_batches: PositiveInt
    ks: list[PositiveInt]
    bf16_ks: list[PositiveInt]
    compile: Compile
    profile_precisions: list[one_of(STORAGE_DTYPES)]
    profile_k: PositiveInt
    profile_steps: PositiveInt
    tune_trials: Annotated[int, Field(ge=0), Allowed("an integer >= 0 (0: skip)")]
    tune_epochs: PositiveInt
    tune_k: PositiveInt
    ttq_timeout: Annotated[int, Field(ge=0), Allowed("whole seconds >= 0 (0: skip)")]
    ttq_trials: PositiveInt
    ttq_epochs: PositiveInt


# --- whole configs -----------------------------------------------------------------------------


def default_metric(metric: str | None, cv: bool) -> str:
    """study.metric, or the default: val/acc_best, or the CV mean with data.cv_folds."""
    return metric or ("cv/acc_mean" if cv else "val/acc_best")


class TrainConfig(Group):
    task: Literal["train", "tune", "bench"]
    seed: Annotated[int, Allowed("an integer")]
    evaluate_test: bool
    data: Data
    model: Model
    optim: Optim
    trainer: Trainer
    tracking: Tracking
    paths: Paths

    @model_validator(mode="after")
    def _across_groups(self) -> TrainConfig:
        data, model = self.data, self.model
        if model.family == "cnn":
            _check(
                data.name in (*IMAGE_DATASETS, "custom"),
                "model",
                "cnn",
                f"an image dataset ({', '.join(IMAGE_DATASETS)}); data={data.name} is a table",
            )
        if self.evaluate_test:
            # a user's DataModule: whether it has a test loader is known once it is built
            has_test = data.name in ("mnist", "fashion_mnist", "custom") or data.test_fraction > 0
            _check(
                has_test,
                "evaluate_test",
                True,
                "only with a test set: data.test_fraction=0 holds none out",
            )
            if model.family == "lightning":
                module = targets.resolve("model._target_", model.target)
                _check(
                    getattr(module, "test_step", None) is not L.LightningModule.test_step,
                    "evaluate_test",
                    True,
                    f"a LightningModule with a test_step: {model.target} has none",
                )
        return self


class TuneConfig(TrainConfig):
    search: Search
    study: Study

    @model_validator(mode="after")
    def _metric(self) -> TuneConfig:
        cv = bool(self.data.cv_folds)
        metric = default_metric(self.study.metric, cv)
        allowed = [m for m in METRICS if m.startswith("cv/") == cv]
        # a user's LightningModule may log any metric of its own to optimise
        own = self.model.family == "lightning" and not cv and metric not in METRICS
        _check(metric in allowed or own, "study.metric", metric, f"one of {', '.join(allowed)}")
        if not own:
            direction = METRICS[metric]
            ok = self.study.direction == direction
            _check(ok, "study.direction", self.study.direction, f"{direction} for {metric}")
        return self


class BenchConfig(TuneConfig):
    bench: Bench


SCHEMAS: dict[str, type[TrainConfig]] = {
    "train": TrainConfig,
    "tune": TuneConfig,
    "bench": BenchConfig,
}


# --- the adapter -------------------------------------------------------------------------------


def _untagged(loc: Sequence[str | int], prefix: str) -> list[str | int]:
    """An error's location without the variant's tag (`mlp` in model.mlp.dropout.hidden)."""
    loc = list(loc)
    if not prefix and len(loc) > 1 and loc[0] in VARIANT_KEYS:
        del loc[1]
    return loc


def _key(loc: Sequence[str | int], prefix: str) -> str:
    return ".".join(filter(None, [prefix, *map(str, loc)]))


def _node(config: Any, loc: Sequence[str | int]) -> Any:
    for part in loc:
        config = config[part] if isinstance(config, Mapping | list) else None
    return config


def config_error(error: ValidationError, given: Any, prefix: str = "") -> ConfigError:
    """The first problem pydantic found, in droptune's words: key, value, what is allowed."""
    first = error.errors()[0]
    kind, ctx = first["type"], first.get("ctx") or {}
    loc = _untagged(first["loc"], prefix)
    key = _key(loc, prefix)
    if isinstance(ctx.get("error"), ConfigError):  # a check across keys, raised by a validator
        inner = ctx["error"]
        # a group's validator names keys from the top (model.depth); a search-space entry's,
        # which cannot know where it sits, names its own keys (low)
        absolute = not key or inner.key.split(".")[0].split("[")[0] == key.split(".")[0]
        return inner if absolute else ConfigError(f"{key}.{inner.key}", inner.value, inner.allowed)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        variant_key = VARIANT_KEYS[key]
        choices = {"data": DATA_NAMES, "model": FAMILIES, "optim": OPTIMIZERS}[key]
        value = (_node(given, loc) or {}).get(variant_key)
        return ConfigError(f"{key}.{variant_key}", value, f"one of {', '.join(choices)}")
    if kind == "droptune":
        return ConfigError(key + ctx["at"], ctx["value"], ctx["allowed"])
    if kind == "extra_forbidden":
        parent_loc = loc[:-1]
        parent = _key(parent_loc, prefix)
        node = _node(given, parent_loc)
        known = [k for k in node if k != loc[-1]] if isinstance(node, Mapping) else []
        return unknown_key(key, first["input"], parent, known)
    if kind == "missing":
        return ConfigError(key, None, "a value (the key is required)")
    return ConfigError(key, first["input"], first["msg"])


def parse(cfg: Mapping[str, Any]) -> TrainConfig:
    """The typed config of a composed train, tune or bench config; one ConfigError if not."""
    task = cfg.get("task")
    _check(task in SCHEMAS, "task", task, f"one of {', '.join(SCHEMAS)}")
    try:
        return SCHEMAS[task].model_validate(cfg)
    except ValidationError as error:
        raise config_error(error, cfg) from None


def checked(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A composed config, checked, as plain values with every optional key present."""
    return parse(cfg).model_dump(by_alias=True)


def space_entry(name: str, raw: Any) -> SpaceEntry:
    """One `search.space` entry, checked on its own (spaces grow entries after composition)."""
    try:
        return SpaceEntry.model_validate(raw)
    except ValidationError as error:
        raise config_error(error, raw, f"search.space.{name}") from None
