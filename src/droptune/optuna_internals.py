"""Every use of Optuna's private API, in one place, tested by tests/test_optuna_internals.py.

droptune needs five things Optuna does not offer publicly: a study's storage (`Study._storage`),
a trial's storage id (`Trial._trial_id`, also on FrozenTrial), the Pareto front of trials already
read (`_get_pareto_front_trials_by_trials`: `Study.best_trials` reads and copies the whole study
again), and, for `BatchAskStorage`, the
cache Optuna wraps RDB storages in (`_CachedStorage`: `_read_trials_from_remote_storage`,
`_add_trials_to_cache`, `_studies`, `_lock`, `_backend`) and the RDB backend's `_get_trials`. They are pinned by `optuna<6`; an
Optuna release that moves one fails that test file, naming what moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.study import StudyDirection
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (for an RDB URL: Optuna's cache over it)."""
    return study._storage


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (its number counts within one study only)."""
    return trial._trial_id


def pareto_front(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
) -> list[FrozenTrial]:
    """The complete trials no other complete trial dominates (what `Study.best_trials` returns)."""
    return _get_pareto_front_trials_by_trials(trials, directions)


class BatchAskStorage(_CachedStorage):
    """Optuna's cache over an RDB storage, able to read the running trials once per batch of asks.

    With TPE's constant liar every ask reads all running trials again for each parameter group
    (their params change while they are sampled): a batch of K asks loads O(K^2) trials, 14,500
    for K = 64 (8 s on a 2-core CPU). Inside `batch()` the first read is Optuna's; each later one
    loads only the trials this process wrote to since the last read and the trials created since
    then. A single worker so sees exactly what a full read would; with several, a peer's writes to
    its own running trials show from the next batch on, as the liar needs only their params.
    """

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._batch_reads: dict[int, int] | None = None  # study id -> newest trial id read
        self._written: set[int] = set()

    @contextmanager
    def batch(self) -> Iterator[None]:
        self._batch_reads, self._written = {}, set()
        try:
            yield
        finally:
            self._batch_reads = None

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        reads = self._batch_reads
        if reads is None or study_id not in reads:
            super()._read_trials_from_remote_storage(study_id)
            if reads is not None:
                reads[study_id] = self._newest(study_id)
            return
        with self._lock:
            study = self._studies[study_id]
            trials = self._backend._get_trials(  # private: see the module docstring
                study_id,
                states=None,
                included_trial_ids=self._written & study.unfinished_trial_ids,
                trial_id_greater_than=reads[study_id],
            )
            self._written.clear()
            self._add_trials_to_cache(study_id, trials)
            # Optuna's next full read settles which of these finished (and its bookkeeping)
            study.unfinished_trial_ids.update(trial_id_of(trial) for trial in trials)
            reads[study_id] = max([reads[study_id], *(trial_id_of(trial) for trial in trials)])

    def _newest(self, study_id: int) -> int:
        with self._lock:
            return max(
                (trial_id_of(t) for t in self._studies[study_id].trials.values()), default=-1
            )

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        self._written.add(trial_id)
        return trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._written.add(trial_id)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        self._written.add(trial_id)
        return changed

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._written.add(trial_id)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_user_attr(trial_id, key, value)
        self._written.add(trial_id)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        self._written.add(trial_id)
