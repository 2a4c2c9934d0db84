"""The peer droptune is measured against: Optuna's Lightning example (optuna-examples,
pytorch/pytorch_lightning_simple.py), run as its README runs it, with pruning on.

Kept to the example: a per-sample dataset converted like torchvision's ToTensor, a random 55000 /
5000 split (seed 42), 10 % of the validation batches, batch 128, 10 epochs, Adam at its default
learning rate, an MLP of 1-3 layers of 4-128 units (log) with one dropout rate in [0.2, 0.5],
log-softmax and NLL, TPE and the median pruner through optuna-integration's Lightning callback.
Changed, each in the peer's favour: no TensorBoard logger (it writes files every step), and the
data arrays are droptune's (no download). Each finished trial's model is also scored on the test
set (`test_acc`, never used to select), as droptune's `evaluate_test` does.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import optuna
import torch
from optuna_integration import PyTorchLightningPruningCallback
from torch import nn
from torch.nn import functional as F

from droptune import data as ds

EPOCHS = 10
BATCH_SIZE = 128
VALID_FRACTION = 0.1  # limit_val_batches: the example validates on a tenth of its 5000 images
N_VALID = 5000


class PerSample(torch.utils.data.Dataset):
    """torchvision's MNIST datasets: one uint8 image converted per sample (ToTensor)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.images[i], dtype=np.uint8)).float().div(255.0)
        return image, int(self.labels[i])


class LightningNet(L.LightningModule):
    """The example's model: Linear-ReLU-Dropout per layer, log-softmax, NLL, Adam's defaults."""

    def __init__(self, dropout: float, output_dims: list[int], n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 28 * 28
        for output_dim in output_dims:
            layers += [nn.Linear(width, output_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = output_dim
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.layers(data.view(-1, 28 * 28)), dim=1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        data, target = batch
        return F.nll_loss(self(data), target)

    def validation_step(self, batch, batch_idx: int) -> None:
        data, target = batch
        pred = self(data).argmax(dim=1, keepdim=True)
        self.log("val_acc", pred.eq(target.view_as(pred)).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.layers.parameters())


def test_accuracy(model: LightningNet, arrays: ds.Arrays) -> float:
    loader = torch.utils.data.DataLoader(
        PerSample(arrays.x_test, arrays.y_test), batch_size=1000, shuffle=False
    )
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(x.to(model.device)).argmax(1) == y.to(model.device)).sum())
            for x, y in loader
        )
    return correct / len(arrays.y_test)


def objective(trial: optuna.Trial, arrays: ds.Arrays, accelerator: str) -> float:
    n_layers = trial.suggest_int("n_layers", 1, 3)
    dropout = trial.suggest_float("dropout", 0.2, 0.5)
    output_dims = [trial.suggest_int(f"n_units_l{i}", 4, 128, log=True) for i in range(n_layers)]
    model = LightningNet(dropout, output_dims, len(arrays.classes))
    full = PerSample(arrays.x_train, arrays.y_train)
    train, val = torch.utils.data.random_split(
        full,
        [len(full) - N_VALID, N_VALID],
        generator=torch.Generator().manual_seed(42),
    )
    trainer = L.Trainer(
        logger=False,
        limit_val_batches=VALID_FRACTION,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=EPOCHS,
        accelerator=accelerator,
        devices=1,
        callbacks=[PyTorchLightningPruningCallback(trial, monitor="val_acc")],
    )
    trainer.fit(
        model,
        train_dataloaders=torch.utils.data.DataLoader(train, batch_size=BATCH_SIZE, shuffle=True),
        val_dataloaders=torch.utils.data.DataLoader(val, batch_size=BATCH_SIZE, shuffle=False),
    )
    trial.set_user_attr("test_acc", test_accuracy(model, arrays))
    return trainer.callback_metrics["val_acc"].item()


def run_study(arrays: ds.Arrays, timeout: float, accelerator: str, seed: int) -> optuna.Study:
    """The example's study (in memory), given `timeout` seconds; the example seeds nothing, this
    seeds its sampler so a benchmark can be repeated."""
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(lambda trial: objective(trial, arrays, accelerator), timeout=timeout)
    return study
