"""A folder of images (resident or streamed) and bad user data, refused before any trial."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from droptune.data import DataFileError
from droptune.data.folders import FolderSpec, load_image_folder
from droptune.data.streamed import Streamed
from droptune.errors import ConfigError
from droptune.inputs import load_data
from droptune.train import train

COLOURS = ("red", "green", "blue")


def write_folder(root, per_class=24, size=(10, 12), classes=COLOURS):
    """PNGs whose dominant channel is their class: learnable in an epoch or two."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (*size, 3)).astype(np.uint8)
            pixels[:, :, c % 3] += 170
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def folder_cfg(make_cfg, root, *overrides):
    return make_cfg("data=image_folder", f"data.root={root}", "model=cnn", "model.channels=[8]",
                    "trainer.max_epochs=4", "data.batch_size=8", *overrides)  # fmt: skip


def test_a_folder_that_fits_is_decoded_once_into_resident_uint8(tmp_path):
    root = write_folder(tmp_path / "img")
    arrays = load_image_folder(FolderSpec(str(root)), test_fraction=0.0, seed=0)
    assert not isinstance(arrays, Streamed)
    assert arrays.x_train.dtype == np.uint8 and arrays.x_train.shape == (72, 3, 10, 12)
    assert arrays.classes == sorted(COLOURS) and np.bincount(arrays.y_train).tolist() == [24] * 3
    first = np.asarray(Image.open(root / "blue" / "000.png")).transpose(2, 0, 1)
    assert np.array_equal(arrays.x_train[0], first)  # classes and files in ImageFolder's order


def test_a_folder_over_the_budget_streams_the_same_pixels(tmp_path):
    root = write_folder(tmp_path / "img")
    spec = FolderSpec(str(root), image_size=[6, 6], max_resident_bytes=1000)
    streamed = load_image_folder(spec, test_fraction=0.25, seed=0)
    resident = load_image_folder(FolderSpec(str(root), image_size=6), 0.25, seed=0)
    assert isinstance(streamed, Streamed) and streamed.input_shape == (3, 6, 6)
    assert len(streamed.y_train) == 54 and streamed.has_test
    train_index, val_index = np.arange(0, 40), np.arange(40, 54)
    module = streamed.datamodule(train_index, val_index, 8, 0)
    x, y = next(iter(module.val_dataloader()[0]))
    dataset = module.dataset
    raw = torch.round((x * dataset.std + dataset.mean) * 255).to(torch.uint8).numpy()
    # the resident path's arrays hold the same images (its test split is another call)
    assert any(np.array_equal(raw[0], image) for image in resident.x_train)
    assert len(module.parts["train_probe"]) == len(val_index) and y.dtype == torch.int64


@pytest.mark.parametrize("budget", ["null", "1000"])
def test_train_learns_a_folder_resident_or_streamed(make_cfg, tmp_path, budget):
    root = write_folder(tmp_path / "img")
    summary = train(
        folder_cfg(make_cfg, root, f"data.max_resident_bytes={budget}", "evaluate_test=true")
    )
    assert summary["metrics"]["val/acc"] > 0.6 and "test/acc" in summary["metrics"]


def test_a_folder_of_one_class_is_refused(make_cfg, tmp_path):
    root = write_folder(tmp_path / "img", classes=("red",))
    with pytest.raises(ConfigError, match="data.root=.*at least two classes"):
        load_data(folder_cfg(make_cfg, root))


def test_an_image_that_cannot_be_decoded_is_named(make_cfg, tmp_path):
    root = write_folder(tmp_path / "img")
    (root / "green" / "broken.png").write_bytes(b"\x89PNG not really")
    for budget in ("null", "1000"):
        with pytest.raises(DataFileError, match="broken.png cannot be decoded"):
            load_data(folder_cfg(make_cfg, root, f"data.max_resident_bytes={budget}"))


def csv_cfg(make_cfg, path):
    return make_cfg("data=csv", f"data.path={path}", "data.target=label")


def test_a_header_only_csv_says_no_rows(make_cfg, tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n")
    with pytest.raises(ConfigError, match="no rows"):
        load_data(csv_cfg(make_cfg, tmp_path / "t.csv"))


def test_missing_values_name_their_columns_and_count_rows(make_cfg, tmp_path):
    frame = pd.DataFrame(
        {"a": [1.0, None, 3.0, None] * 5, "b": [1.0] * 20, "label": ["x", "y"] * 10}
    )
    frame.loc[0, "b"] = None  # a row whose "a" is there
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError, match=r"11 row\(s\) miss values in column\(s\) \['a', 'b'\]"):
        load_data(csv_cfg(make_cfg, tmp_path / "t.csv"))


def test_a_csv_of_one_class_is_refused(make_cfg, tmp_path):
    pd.DataFrame({"a": range(10), "label": ["only"] * 10}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError, match="data.target='label'.*two classes.*'only'"):
        load_data(csv_cfg(make_cfg, tmp_path / "t.csv"))


def test_a_class_too_small_for_the_stratified_splits_is_named(make_cfg, tmp_path):
    labels = ["common"] * 30 + ["rare"]
    pd.DataFrame({"a": range(31), "label": labels}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ConfigError, match="data.test_fraction=0.2.*class 'rare' has 1 row"):
        load_data(csv_cfg(make_cfg, tmp_path / "t.csv"))


def test_more_folds_than_the_smallest_class_has_rows_is_refused(make_cfg):
    from droptune.inputs import splits

    cfg = make_cfg("data.cv_folds=500")
    with pytest.raises(ConfigError, match="data.cv_folds=500.*class '.*' has \\d+ row"):
        splits(cfg, load_data(cfg))
