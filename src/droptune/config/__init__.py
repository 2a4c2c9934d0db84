"""The typed schema of every config group droptune owns, and the one adapter to ConfigError.

pydantic v2 rather than Hydra's dataclass schemas: OmegaConf's structured configs cannot hold a
union such as "a rate, or a list of one rate per layer", nor a range, so the checks would stay
hand-written. Here each group's variant (data by `name`, model by `family`, optim by `name`) is
one model; each constrained type carries the words a user sees (`Allowed`); values are strict
(`true` is not a width, "0.5" is not a rate); a key a droptune-owned group does not have is an
error with "did you mean". The group's YAML file is the one place each default lives: a key every
file of its group sets is required here, and the schema defaults only what no group file sets.
"""

from droptune.config.whole import checked as validate

__all__ = ["validate"]
