"""Studies: where they live and how dead workers are found (storage), sampler and pruner
(samplers), create-or-resume with the fingerprint check (resume), the total budget and progress
(budget), and the ask/tell loop that ties them together (loop: `optimize`)."""

from droptune.study.loop import optimize

__all__ = ["optimize"]
