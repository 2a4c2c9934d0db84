"""The Optuna internals droptune relies on (all in droptune.optuna_internals): an Optuna release
that moves one fails here first, with a message that names what moved."""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import numpy as np
import optuna
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage

from droptune.optuna_internals import BatchAskStorage, pareto_front, storage_of, trial_id_of


def sqlite(tmp_path, name):
    return RDBStorage(f"sqlite:///{tmp_path / name}.db")


def test_the_private_names_droptune_uses_are_there(tmp_path):
    for method in ("_read_trials_from_remote_storage", "_add_trials_to_cache"):
        assert hasattr(_CachedStorage, method), f"optuna's _CachedStorage has no {method} now"
    cached = _CachedStorage(sqlite(tmp_path, "names"))
    for attribute in ("_studies", "_lock", "_backend"):
        assert hasattr(cached, attribute), f"optuna's _CachedStorage has no {attribute} now"
    parameters = inspect.signature(RDBStorage._get_trials).parameters
    for argument in ("study_id", "states", "included_trial_ids", "trial_id_greater_than"):
        assert argument in parameters, f"RDBStorage._get_trials takes no {argument} now"


def test_pareto_front_of_read_trials_is_the_studys_best_trials():
    study = optuna.create_study(directions=["maximize", "minimize"])
    rng = np.random.default_rng(0)
    for _ in range(40):
        study.tell(study.ask(), [float(rng.random()), float(rng.random())])
    front = pareto_front(study.get_trials(deepcopy=False), study.directions)
    assert sorted(t.number for t in front) == sorted(t.number for t in study.best_trials)
    assert 1 < len(front) < 40


def test_storage_of_and_trial_id_of_read_what_the_public_api_says(tmp_path):
    storage = sqlite(tmp_path, "ids")
    study = optuna.create_study(storage=storage, study_name="ids")
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    trial = study.ask()
    assert isinstance(storage_of(study), (RDBStorage, _CachedStorage))
    study_id = storage.get_study_id_from_name("ids")
    expected = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    assert trial_id_of(trial) == expected
    assert trial_id_of(study.trials[-1]) == expected  # a FrozenTrial too
    assert storage_of(study).get_trial(expected).number == trial.number


def asked_params(storage, batched: bool) -> list[dict]:
    """Ten finished trials, then eight asked together with TPE's constant liar."""
    sampler = optuna.samplers.TPESampler(
        seed=3, multivariate=True, group=True, constant_liar=True, n_startup_trials=4
    )
    study = optuna.create_study(storage=storage, sampler=sampler, study_name="asks")

    def sample(trial):
        x = trial.suggest_float("x", -3, 3)
        if x > 0:
            trial.suggest_int("depth", 1, 4)
        return trial

    for _ in range(10):
        trial = sample(study.ask())
        study.tell(trial, trial.params["x"] ** 2)
    asked = []
    with storage.batch() if batched else nullcontext():
        for _ in range(8):
            asked.append(sample(study.ask()).params)
    return asked


def test_a_batch_of_asks_samples_what_separate_asks_sample(tmp_path):
    """BatchAskStorage reads the running trials once per batch; the sampler sees the same trials
    (its own writes included), so it proposes the same parameters."""
    batched = asked_params(BatchAskStorage(sqlite(tmp_path, "batched")), batched=True)
    plain = asked_params(_CachedStorage(sqlite(tmp_path, "plain")), batched=False)
    assert batched == plain
    assert len({tuple(sorted(p.items())) for p in batched}) == 8  # the liar spread them


def test_a_batch_sees_trials_another_worker_created_during_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared'}.db"
    ours = BatchAskStorage(RDBStorage(url))
    study = optuna.create_study(storage=ours, study_name="shared")
    theirs = optuna.load_study(study_name="shared", storage=url)
    with ours.batch():
        study.ask()
        theirs.ask()  # another worker's ask, mid-batch
        study.ask()
        numbers = sorted(t.number for t in study.get_trials(deepcopy=False))
    assert numbers == [0, 1, 2]


def test_a_batch_reads_back_its_own_writes(tmp_path):
    storage = BatchAskStorage(sqlite(tmp_path, "own"))
    study = optuna.create_study(storage=storage, study_name="own")
    with storage.batch():
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("note", "mine")
        seen = study.get_trials(deepcopy=False)[0]
        assert seen.params == trial.params and seen.user_attrs["note"] == "mine"
    study.tell(trial, 0.5)
    assert study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.COMPLETE
