"""Parsing, verified downloads from a local HTTP server, splits, k-fold and device batches."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from droptune.data import (
    Arrays,
    DataFileError,
    IndexBatches,
    TensorDataModule,
    fetch,
    holdout_test,
    kfold_indices,
    load,
    train_val_indices,
)
from droptune.data.datasets import read_idx
from droptune.errors import ConfigError


def write_idx(path, array: np.ndarray, compress: bool = True) -> bytes:
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path.read_bytes()


def test_idx_roundtrip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), images)


def test_truncated_idx_is_refused(tmp_path):
    images = np.ones((5, 4, 4), dtype=np.uint8)
    data = write_idx(tmp_path / "x.gz", images)
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")
    raw = write_idx(tmp_path / "short", images, compress=False)
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(DataFileError, match="header .* says 80"):
        read_idx(tmp_path / "short")


def test_fetch_downloads_verifies_and_never_refetches(tmp_path, http_dir):
    served, url = http_dir
    payload = b"canonical bytes" * 1000
    (served / "file.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    target = tmp_path / "data" / "set"
    path = fetch("file.bin", target, sha, ["http://127.0.0.1:9/nothing", url])
    assert path.read_bytes() == payload
    assert [p.name for p in target.iterdir()] == ["file.bin"]  # no temp file left behind
    (served / "file.bin").unlink()  # a verified file is used without the network
    assert fetch("file.bin", target, sha, [url]) == path


def test_fetch_replaces_a_corrupt_local_file(tmp_path, http_dir):
    served, url = http_dir
    payload = b"good" * 100
    (served / "f").write_bytes(payload)
    (tmp_path / "f").write_bytes(b"bad")
    fetch("f", tmp_path, hashlib.sha256(payload).hexdigest(), [url])
    assert (tmp_path / "f").read_bytes() == payload


def test_truncated_download_is_refused_with_a_clear_error(tmp_path, http_dir):
    served, url = http_dir
    payload = b"x" * 10_000
    (served / "f.gz").write_bytes(payload[:5000])
    sha = hashlib.sha256(payload).hexdigest()
    with pytest.raises(DataFileError) as error:
        fetch("f.gz", tmp_path, sha, [url])
    message = str(error.value)
    assert sha in message and "f.gz" in message and "Put a verified copy" in message
    assert not (tmp_path / "f.gz").exists()


def test_offline_error_names_file_checksum_and_where_to_put_it(tmp_path):
    with pytest.raises(DataFileError) as error:
        load("sonar", tmp_path, ["http://127.0.0.1:9"])
    message = str(error.value)
    assert "sonar.all-data" in message and "missing" in message
    assert "e90434cdbf00fcf93ffa911fe447ae25606979658e60f1d32e155c3b5240234d" in message
    assert str(tmp_path / "sonar" / "sonar.all-data") in message


def test_csv_any_label_type(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["f1,f2,name,kind"] + [
        f"{rng.normal():.3f},{rng.normal():.3f},row{i},{'cat' if i % 3 else 'dog'}"
        for i in range(30)
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines))
    arrays = load(
        "csv", tmp_path, path=str(tmp_path / "t.csv"), target="kind", features=["f1", "f2"]
    )
    assert arrays.classes == ["cat", "dog"] and arrays.input_shape == (2,)
    assert (arrays.y_train == 1).sum() == 10
    with pytest.raises(ConfigError, match="data.target='label'.*one of the columns"):
        load("csv", tmp_path, path=str(tmp_path / "t.csv"), target="label")
    with pytest.raises(ConfigError, match="data.features=\\['name'\\].*numeric"):
        load("csv", tmp_path, path=str(tmp_path / "t.csv"), target="kind")


def test_train_val_split_is_stratified_disjoint_and_seed_stable():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    train, val = train_val_indices(labels, 0.2, seed=7)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 200
    np.testing.assert_array_equal(np.bincount(labels[val]), [20, 10, 6, 4])
    again, _ = train_val_indices(labels, 0.2, seed=7)
    other, _ = train_val_indices(labels, 0.2, seed=8)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def test_kfold_gives_ten_disjoint_stratified_folds():
    labels = np.array([0] * 111 + [1] * 97)
    folds = kfold_indices(labels, 10, seed=0)
    assert len(folds) == 10
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals) == list(range(208))  # each row validated exactly once
    for train, val in folds:
        assert len(np.intersect1d(train, val)) == 0
        assert abs(labels[val].mean() - labels.mean()) < 0.06


def test_holdout_test_split_for_datasets_without_one():
    arrays = load("digits", ".")
    held = holdout_test(arrays, 0.2, seed=0)
    assert len(held.y_test) == 360 and len(held.y_train) == 1437
    assert holdout_test(arrays, 0.0, seed=0) is arrays


def table(x_train, y_train) -> Arrays:
    return Arrays(x_train, y_train, None, None, ["a", "b"], (x_train.shape[1],), None)


def test_scaling_is_fitted_on_the_training_part_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    x[150:] += 100.0  # the validation rows are far off: they must not shift the scaler
    module = TensorDataModule(table(x, np.arange(200) % 2), np.arange(150), np.arange(150, 200), 32)
    module.setup()
    train_x, _ = module.tensors["train"]
    val_x, _ = module.tensors["val"]
    assert train_x.mean().abs() < 1e-5 and abs(train_x.std().item() - 1) < 0.01
    assert val_x.mean() > 50


def test_index_batches_cover_each_sample_once_in_a_new_order_each_epoch():
    x = torch.arange(100).float()[:, None]
    y = torch.arange(100)
    batches = IndexBatches(x, y, 32, torch.Generator().manual_seed(0))
    assert len(batches) == 4
    first = torch.cat([b[1] for b in batches])
    second = torch.cat([b[1] for b in batches])
    assert sorted(first.tolist()) == list(range(100)) and not torch.equal(first, second)
    for bx, by in batches:
        assert torch.equal(bx[:, 0].long(), by)  # features stay with their labels
    replay = IndexBatches(x, y, 32, torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([b[1] for b in replay]), first)


def test_training_probe_is_a_fixed_training_sample_as_large_as_validation():
    x = np.arange(300, dtype=np.float32)[:, None]
    module = TensorDataModule(
        table(x, np.arange(300) % 2), np.arange(200), np.arange(200, 300), 32, standardize=False
    )
    module.setup()
    probe_x, _ = module.tensors["train_probe"]
    assert len(probe_x) == 100 and probe_x.max() < 200  # only training rows
    assert len(probe_x.unique()) == 100
    val_loader, probe_loader = module.val_dataloader()
    assert torch.equal(torch.cat([b[0] for b in probe_loader]), probe_x)


def test_a_shared_cache_prepares_each_split_once():
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    arrays = table(x, np.arange(300) % 2)
    cache: dict = {}
    first = TensorDataModule(arrays, np.arange(200), np.arange(200, 300), 32, cache=cache)
    first.setup()
    second = TensorDataModule(arrays, np.arange(200), np.arange(200, 300), 16, cache=cache)
    second.setup()
    assert second.tensors["train"][0] is first.tensors["train"][0]  # reused, not recomputed
    raw = TensorDataModule(
        arrays, np.arange(200), np.arange(200, 300), 32, standardize=False, cache=cache
    )
    raw.setup()
    other = TensorDataModule(arrays, np.arange(100, 300), np.arange(100), 32, cache=cache)
    other.setup()
    assert len(cache) == 3
    torch.testing.assert_close(raw.tensors["train"][0], torch.from_numpy(x[:200]))
    assert len(other.tensors["train"][1]) == 200 and not torch.equal(
        other.tensors["val"][0], first.tensors["val"][0]
    )
