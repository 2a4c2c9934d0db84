"""Search spaces from config, and the one function that turns a trial into config overrides.

A space maps entry names to distributions over dotted config paths:

    hidden_rate: {path: model.dropout.hidden, type: float, low: 0.0, high: 0.8}
    max_norm_on: {type: categorical, choices: [false, true]}          # no path: a switch
    max_norm:    {path: model.max_norm, type: float, low: 2, high: 6,
                  when: {max_norm_on: true}, otherwise: null}
    width_1:     {path: model.widths.1, type: int, low: 64, high: 1024, log: true,
                  when: {depth: {ge: 2}}}

`when` holds conditions on earlier entries (a value, a list of values, or {gt|ge|lt|le|ne|in: x});
an entry whose condition fails is not sampled and its path gets `otherwise` when one is given.
A path segment that is a number indexes a list (built as needed). Under `model.dropout.sites` the
rest of a path is one key, a glob over module paths (`model.dropout.sites.encoder.*`).

`search.sites` (conf/search/sites.yaml) adds one rate entry per role of the model's dropout sites
(`search.site_groups: per_site`: per site), or per glob it lists, in front of the space
(`with_sites`).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from droptune.config.tune import SpaceEntry, space_entry
from droptune.errors import ConfigError
from droptune.models.sites import Site, unmatched

OPERATORS = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "ne": operator.ne,
    "in": lambda value, allowed: value in allowed,
}
# The data and its splits are loaded once per study, so only these data keys may vary per trial.
SEARCHABLE_ROOTS = ("model.", "optim.", "trainer.max_epochs", "data.batch_size", "data.standardize")
SITES_PATH = "model.dropout.sites"


def _is_site(path: str) -> bool:
    return path.startswith(SITES_PATH + ".")


def _segments(path: str) -> list[str]:
    """A path's keys; a site glob after model.dropout.sites is one key, dots and all."""
    if _is_site(path):
        return [*SITES_PATH.split("."), path[len(SITES_PATH) + 1 :]]
    return path.split(".")


def _site_keys(search: Mapping[str, Any], sites: Sequence[Site]) -> list[str]:
    """What gets a rate of its own: each role, each site (per_site), or each glob listed."""
    if search["sites"] != "all":
        return list(search["sites"])
    if search["site_groups"] == "per_site":
        return [site.path for site in sites]
    return list(dict.fromkeys(site.role for site in sites))


def with_sites(search: Mapping[str, Any], sites: Sequence[Site]) -> dict[str, Any]:
    """`search.space` with a rate entry per role, site or glob (`search.sites`,
    `search.site_groups`) in front; the space alone when `search.sites` is not set."""
    mode, space = search["sites"], dict(search["space"])
    if mode is None:
        return space
    if not sites:
        raise ConfigError("search.sites", mode, "a model with dropout sites: it has none")
    keys = _site_keys(search, sites)
    for key in unmatched(sites, keys):
        paths = [site.path for site in sites]
        raise ConfigError("search.sites", key, f"a glob or role matching one of the sites {paths}")
    entries = {
        f"rate/{key}": {"path": f"{SITES_PATH}.{key}", "type": "float", **search["site_rate"]}
        for key in keys
    }
    return {**entries, **space}


def _path_exists(config: Mapping[str, Any], path: str) -> bool:
    if _is_site(path):  # a glob: new keys are welcome
        return _path_exists(config, SITES_PATH)
    node: Any = config
    for segment in path.split("."):
        if segment.isdigit():  # a list element, or a scalar / null that becomes a list
            if node is not None and not isinstance(node, list | int | float):
                return False
            node = None
        elif isinstance(node, Mapping) and segment in node:
            node = node[segment]
        else:
            return False
    return True


def _parse_entry(name: str, raw: Any, earlier: Sequence[str], config) -> SpaceEntry:
    """The entry's own checks are its schema's; here, what needs the composed config."""
    key = f"search.space.{name}"
    entry = space_entry(name, raw)
    if entry.path is not None:
        if not entry.path.startswith(SEARCHABLE_ROOTS):
            raise ConfigError(
                f"{key}.path", entry.path, f"a path under {', '.join(SEARCHABLE_ROOTS)}"
            )
        if not _path_exists(config, entry.path):
            raise ConfigError(
                f"{key}.path", entry.path, "a path that exists in the composed config"
            )
    for ref in entry.when:
        if ref not in earlier:
            raise ConfigError(
                f"{key}.when", ref, f"the name of an earlier entry ({', '.join(earlier) or 'none'})"
            )
    return entry


def parse_space(space: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, SpaceEntry]:
    """Validate a `search.space` mapping against the composed config; entries keep file order."""
    if not space:
        raise ConfigError("search.space", space, "at least one entry")
    entries: dict[str, SpaceEntry] = {}
    for name, raw in space.items():
        entries[name] = _parse_entry(name, raw, list(entries), config)
    return entries


def _allows(entry: SpaceEntry, value: Any) -> bool:
    if entry.type == "categorical":
        return value in entry.choices
    kinds = (int,) if entry.type == "int" else (int, float)
    return (
        isinstance(value, kinds)
        and not isinstance(value, bool)
        and entry.low <= value <= entry.high
    )


def _allowed(entry: SpaceEntry) -> str:
    if entry.type == "categorical":
        return f"one of {list(entry.choices)}"
    return f"{'an integer' if entry.type == 'int' else 'a number'} in [{entry.low}, {entry.high}]"


def enqueued(
    trials: Sequence[Mapping[str, Any]], space: Mapping[str, SpaceEntry]
) -> list[dict[str, Any]]:
    """`search.enqueue` checked against the space: every name an entry, every value one the
    entry can take (Optuna would accept any and run it)."""
    for i, params in enumerate(trials):
        for name, value in params.items():
            key = f"search.enqueue.{i}.{name}"
            if name not in space:
                raise ConfigError(
                    key, value, f"the name of an entry of search.space ({', '.join(space)})"
                )
            if not _allows(space[name], value):
                raise ConfigError(
                    key, value, f"{_allowed(space[name])} (search.enqueue=[] queues nothing)"
                )
    return [dict(params) for params in trials]


def _holds(value: Any, condition: Any) -> bool:
    if isinstance(condition, Mapping):
        ((op, operand),) = condition.items()
        return OPERATORS[op](value, operand)
    if isinstance(condition, list | tuple):
        return value in condition
    return value == condition


def suggest(trial: optuna.Trial, space: Mapping[str, SpaceEntry]) -> dict[str, Any]:
    """The only place that samples: returns {config path: value} for one trial."""
    sampled: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for name, entry in space.items():
        active = all(
            ref in sampled and _holds(sampled[ref], condition)
            for ref, condition in entry.when.items()
        )
        if not active:
            if entry.path and "otherwise" in entry.model_fields_set:
                overrides[entry.path] = entry.otherwise
            continue
        if entry.type == "categorical":
            value = trial.suggest_categorical(name, list(entry.choices))
        elif entry.type == "int":
            value = trial.suggest_int(
                name,
                int(entry.low),
                int(entry.high),
                step=int(entry.step or 1),
                log=entry.log,
            )
        else:
            value = trial.suggest_float(name, entry.low, entry.high, step=entry.step, log=entry.log)
        sampled[name] = value
        if entry.path:
            overrides[entry.path] = value
    return overrides


def _list_root(path: str) -> str:
    """model.widths.1 -> model.widths; a path without an index is its own root."""
    if _is_site(path):  # a glob is a key, even one that is a number ("3" of a Sequential)
        return path
    segments = _segments(path)
    cut = next((i for i, s in enumerate(segments) if s.isdigit()), len(segments))
    return ".".join(segments[:cut])


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = _segments(path)
    node: Any = config
    for segment in parents:
        node = node[int(segment)] if segment.isdigit() else node[segment]
    if last.isdigit() and not _is_site(path):
        node.extend([None] * (int(last) + 1 - len(node)))
        node[int(last)] = value
    else:
        node[last] = value


def apply(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of config with the overrides set. A list addressed by index (model.widths.0, ...)
    is rebuilt from the overrides alone, so its length follows what was sampled."""
    result = copy.deepcopy(dict(config))
    for root in {_list_root(p) for p in overrides if _list_root(p) != p}:
        _set(result, root, [])
    if any(_is_site(p) for p in overrides) and _get(result, SITES_PATH) is None:
        _set(result, SITES_PATH, {})
    for path, value in overrides.items():
        _set(result, path, value)
    return result


def _get(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for segment in _segments(path):
        node = node[int(segment)] if segment.isdigit() and isinstance(node, list) else node[segment]
    return node


def _override_root(path: str) -> str:
    """The key a command-line override sets: a list whole, the site rates as one mapping."""
    return SITES_PATH if _is_site(path) else _list_root(path)


def hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, float) else str(value)


def hydra_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """Command-line overrides that reproduce `overrides` (as applied in config) on the same base."""
    roots = list(dict.fromkeys(_override_root(path) for path in overrides))
    return [f"{root}={hydra_value(_get(config, root))}" for root in roots]
