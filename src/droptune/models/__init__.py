"""Models take plain numbers; nothing here imports optuna, hydra or mlflow."""

from droptune.models.dropout import VARIANTS, ClassicDropout, GaussianDropout, make_dropout
from droptune.models.nets import ACTIVATIONS, CNN, MLP, PLACEMENTS, Dropout

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "MLP",
    "PLACEMENTS",
    "VARIANTS",
    "ClassicDropout",
    "Dropout",
    "GaussianDropout",
    "make_dropout",
]
