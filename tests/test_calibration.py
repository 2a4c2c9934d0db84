"""Calibration metrics: droptune's binned sums give torchmetrics' expected calibration error, and
every fit reports val/nll, val/ece and gap/nll of its model as torchmetrics scores it."""

import pytest
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from droptune.calibration import ECE_BINS, calibration_bins, expected_calibration_error
from droptune.fit import build_datamodule, fit
from droptune.inputs import load_data, splits


def torchmetrics_ece(probabilities, labels):
    n_classes = probabilities.shape[-1]
    return multiclass_calibration_error(probabilities, labels, n_classes, n_bins=ECE_BINS).item()


def test_bins_summed_over_batches_give_torchmetrics_ece():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 7, generator=generator) * 3
    probabilities = logits.softmax(1)
    probabilities[:5] = F.one_hot(torch.arange(5) % 7, 7).float()  # confidence exactly 1
    labels = torch.randint(0, 7, (1000,), generator=generator)
    confidence, predicted = probabilities.max(1)
    hits = predicted == labels
    bins = sum(
        calibration_bins(confidence[start : start + 128], hits[start : start + 128])
        for start in range(0, 1000, 128)
    )
    assert expected_calibration_error(bins).item() == pytest.approx(
        torchmetrics_ece(probabilities, labels), abs=1e-6
    )


def test_stacked_bins_give_each_members_own_ece():
    generator = torch.Generator().manual_seed(1)
    probabilities = (torch.randn(3, 500, 4, generator=generator) * 2).softmax(-1)
    labels = torch.randint(0, 4, (500,), generator=generator)
    confidence, predicted = probabilities.max(-1)
    per_member = expected_calibration_error(calibration_bins(confidence, predicted == labels))
    for member in range(3):
        expected = torchmetrics_ece(probabilities[member], labels)
        assert per_member[member].item() == pytest.approx(expected, abs=1e-6)


def test_a_fits_calibration_metrics_are_its_final_models_as_torchmetrics_scores_them(make_cfg):
    cfg = make_cfg("data=digits", "model.width=32", "trainer.max_epochs=2")
    arrays = load_data(cfg)
    ((train_index, val_index),) = splits(cfg, arrays)
    result = fit(cfg, arrays, train_index, val_index)
    datamodule = build_datamodule(cfg, arrays, (train_index, val_index), None)
    datamodule.setup()
    datamodule_tensors = datamodule.tensors
    net = result.module.model.eval()
    scores = {}
    with torch.no_grad():
        for part in ("val", "train_probe"):
            x, y = datamodule_tensors[part]
            logits = net(x)
            scores[part] = (F.cross_entropy(logits, y).item(), logits.softmax(1), y)
    final = result.history[-1]
    val_nll, val_probabilities, val_labels = scores["val"]
    assert final["val/nll"] == pytest.approx(val_nll, abs=1e-5)
    assert final["val/ece"] == pytest.approx(
        torchmetrics_ece(val_probabilities, val_labels), abs=1e-5
    )
    assert final["train/nll_eval"] == pytest.approx(scores["train_probe"][0], abs=1e-5)
    assert final["gap/nll"] == pytest.approx(val_nll - scores["train_probe"][0], abs=1e-5)


def test_a_fused_groups_members_report_their_own_calibration(make_cfg):
    from droptune.fused.fit import train_group
    from droptune.fused.grouping import Member

    widths = ("model.widths=[32,16]", "model.widths=[16,24]")
    cfgs = [make_cfg("data=digits", "model.depth=2", "trainer.max_epochs=2", w) for w in widths]
    arrays = load_data(cfgs[0])
    ((train_index, val_index),) = splits(cfgs[0], arrays)
    reported = []
    members = [Member(i, cfg, seed=i) for i, cfg in enumerate(cfgs)]
    module = train_group(
        arrays,
        [(train_index, val_index)],
        members,
        lambda e, m: (reported.append(m), [True] * 2)[1],
    )
    x, y = module.data["val"].x[0], module.data["val"].y[0]
    with torch.no_grad():
        logits = module.net.eval()(x.expand(2, *x.shape)).float()
    for member in range(2):
        probabilities = logits[member].softmax(1)
        ece = torchmetrics_ece(probabilities, y)
        assert reported[-1][member]["val/ece"] == pytest.approx(ece, abs=1e-5)
        nll = F.cross_entropy(logits[member], y).item()
        assert reported[-1][member]["val/nll"] == pytest.approx(nll, abs=1e-5)


def test_the_reliability_diagram_draws_each_bins_accuracy_and_count():
    from droptune.plots import reliability_diagram

    confidence = torch.tensor([0.05, 0.5, 0.55, 0.95, 1.0, 1.0])
    hits = torch.tensor([False, True, False, True, True, True])
    figure = reliability_diagram(calibration_bins(confidence, hits), "validation")
    accuracy_axes, count_axes = figure.axes
    heights = [bar.get_height() for bar in accuracy_axes.patches]
    counts = [bar.get_height() for bar in count_axes.patches]
    assert len(heights) == len(counts) == ECE_BINS
    assert counts[0] == 1 and counts[7] + counts[8] == 2 and counts[-1] == 3  # 0.95, 1, 1
    assert heights[0] == 0 and heights[-1] == 1
    assert sum(counts) == len(confidence)
    assert "ECE" in accuracy_axes.get_title()
