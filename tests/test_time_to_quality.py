"""Time to quality: a study's course read from real Optuna trials, the selected trial after each
completion, when it first reached a target, and the peer (Optuna's Lightning example) on real
Fashion-MNIST images."""

import dataclasses
import random
import time
from datetime import datetime

import optuna
import pytest

from droptune import peer
from droptune.data.datasets import load
from droptune.time_to_quality import Finished, course, first_reaching, incumbents
from tests.helpers import SHARED_DATA, needs_shared_data


def random_course(seed: int, n: int = 30) -> list[Finished]:
    rng = random.Random(seed)
    return [Finished(seconds=float(i), value=rng.random(), test_acc=rng.random()) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_the_selected_trial_is_the_first_with_the_best_validation_value_so_far(seed):
    finished = random_course(seed)
    for i, selected in enumerate(incumbents(finished)):
        so_far = finished[: i + 1]
        best = max(f.value for f in so_far)
        chosen = next(f for f in so_far if f.value == best)
        assert (selected.seconds, selected.value, selected.test_acc) == (
            finished[i].seconds,
            best,
            chosen.test_acc,
        )


@pytest.mark.parametrize("seed", range(5))
def test_first_reaching_is_when_the_selected_trial_first_meets_the_target(seed):
    finished = random_course(seed)
    target = max(finished, key=lambda f: f.value).test_acc  # the final selection's: reached
    reached = first_reaching(finished, target, "test_acc")
    selected_before = [s.test_acc for s in incumbents(finished) if s.seconds < reached]
    assert all(acc < target for acc in selected_before)
    assert incumbents(finished)[int(reached)].test_acc >= target
    assert first_reaching(finished, 1.5, "value") is None
    assert first_reaching(finished, None, "value") is None


def test_a_course_is_the_completed_trials_in_the_order_they_finished():
    study = optuna.create_study(direction="maximize")
    start = datetime.now()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        time.sleep(0.01)
        if trial.number == 2:
            raise optuna.TrialPruned()
        trial.set_user_attr("test_acc", 1 - x)
        return x

    study.optimize(objective, n_trials=6)
    finished = course(study, start)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [f.value for f in finished] == [t.value for t in complete]
    assert [f.test_acc for f in finished] == [t.user_attrs["test_acc"] for t in complete]
    seconds = [f.seconds for f in finished]
    assert seconds == sorted(seconds) and seconds[0] > 0


@needs_shared_data
def test_the_peer_scores_each_finished_trial_on_the_test_set():
    images = load("fashion_mnist", SHARED_DATA, mirrors=[])
    # the example holds out 5000 images for validation; 200 more are its training set here
    small = dataclasses.replace(
        images,
        x_train=images.x_train[: peer.N_VALID + 200],
        y_train=images.y_train[: peer.N_VALID + 200],
        x_test=images.x_test[:500],
        y_test=images.y_test[:500],
    )
    study = peer.run_study(small, timeout=0.1, accelerator="cpu", seed=0)
    (trial,) = study.trials  # the timeout is checked between trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert 1 <= trial.params["n_layers"] <= 3 and 0.2 <= trial.params["dropout"] <= 0.5
    assert 0.0 <= trial.value <= 1.0
    assert 0.1 < trial.user_attrs["test_acc"] <= 1.0  # above chance after 10 epochs
