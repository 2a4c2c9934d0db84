"""The canonical datasets, read from the shared copies (skipped where they are absent)."""

import shutil

import numpy as np
import pytest

from droptune.data import DataFileError, load
from droptune.data.datasets import CHECKSUMS
from tests.helpers import SHARED_DATA, needs_shared_data

pytestmark = [pytest.mark.realdata, needs_shared_data]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_verify_and_parse(name):
    arrays = load(name, SHARED_DATA, mirrors=[])
    assert arrays.x_train.shape == (60000, 1, 28, 28) and arrays.x_test.shape == (10000, 1, 28, 28)
    assert len(arrays.classes) == 10
    counts = np.bincount(arrays.y_test)
    assert counts.sum() == 10000 and counts.min() >= 892


def test_sonar_verifies_and_parses():
    arrays = load("sonar", SHARED_DATA, mirrors=[])
    assert arrays.x_train.shape == (208, 60) and arrays.classes == ["M", "R"]
    assert np.bincount(arrays.y_train).tolist() == [111, 97]
    assert arrays.x_test is None


def test_download_of_the_real_files_from_a_local_mirror(tmp_path, http_dir):
    served, url = http_dir
    for file_name in CHECKSUMS["mnist"]:
        shutil.copy(SHARED_DATA / "mnist" / file_name, served / file_name)
    arrays = load("mnist", tmp_path / "data", mirrors=[url])
    assert arrays.x_train.shape[0] == 60000
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        CHECKSUMS["mnist"]
    )


def test_a_corrupted_copy_is_never_trained_on(tmp_path):
    copy = tmp_path / "sonar"
    copy.mkdir()
    data = (SHARED_DATA / "sonar" / "sonar.all-data").read_bytes()
    (copy / "sonar.all-data").write_bytes(data.replace(b",R", b",M", 1))
    with pytest.raises(DataFileError, match="expected sha256"):
        load("sonar", tmp_path, mirrors=[])
