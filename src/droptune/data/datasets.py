"""Dataset sources: canonical files (verified), scikit-learn's digits, and any user CSV.

Each loader returns raw arrays; scaling and splitting happen later, fitted on the training part only.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from droptune.data.download import DataFileError, fetch
from droptune.errors import ConfigError

# SHA-256 of the canonical public files (the same bytes as the shared copies the tests read).
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "sonar": {
        "sonar.all-data": "e90434cdbf00fcf93ffa911fe447ae25606979658e60f1d32e155c3b5240234d",
    },
}
FASHION_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]
DATASETS = ("mnist", "fashion_mnist", "sonar", "digits", "csv")


@dataclass
class Arrays:
    """A dataset as arrays. x_test is None where the source has no test set (split off later)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]
    input_shape: tuple[int, ...]
    pixel_max: float | None  # images: raw value of a white pixel; None for tables

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file of unsigned bytes; a truncated file is refused."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, gzip.BadGzipFile) as error:
        raise DataFileError(f"{path} is not a readable gzip file ({error})") from error
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataFileError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataFileError(
            f"{path} holds {len(raw) - header} bytes of data; its header {dims} says {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _verified(name: str, data_dir: Path, mirrors: Sequence[str]) -> dict[str, Path]:
    return {
        file_name: fetch(file_name, data_dir / name, sha256, mirrors)
        for file_name, sha256 in CHECKSUMS[name].items()
    }


def load_idx_dataset(name: str, data_dir: Path, mirrors: Sequence[str]) -> Arrays:
    files = _verified(name, data_dir, mirrors)
    x_train = read_idx(files["train-images-idx3-ubyte.gz"])
    y_train = read_idx(files["train-labels-idx1-ubyte.gz"])
    x_test = read_idx(files["t10k-images-idx3-ubyte.gz"])
    y_test = read_idx(files["t10k-labels-idx1-ubyte.gz"])
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataFileError(f"{name}: image and label counts differ")
    classes = FASHION_CLASSES if name == "fashion_mnist" else [str(d) for d in range(10)]
    return Arrays(
        x_train[:, None],
        y_train.astype(np.int64),
        x_test[:, None],
        y_test.astype(np.int64),
        classes,
        (1, 28, 28),
        255.0,
    )


def _encode_labels(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    classes, codes = np.unique(labels.astype(str), return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in classes]


def _table(features: np.ndarray, labels: np.ndarray) -> Arrays:
    codes, classes = _encode_labels(labels)
    x = features.astype(np.float32)
    return Arrays(x, codes, None, None, classes, (x.shape[1],), None)


def load_sonar(data_dir: Path, mirrors: Sequence[str]) -> Arrays:
    import pandas as pd

    frame = pd.read_csv(_verified("sonar", data_dir, mirrors)["sonar.all-data"], header=None)
    return _table(frame.iloc[:, :-1].to_numpy(), frame.iloc[:, -1].to_numpy())


def load_digits() -> Arrays:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None]
    return Arrays(
        images,
        bunch.target.astype(np.int64),
        None,
        None,
        [str(d) for d in range(10)],
        (1, 8, 8),
        16.0,
    )


def load_csv(path: str | None, target: str | None, features: Sequence[str] | None) -> Arrays:
    """Any CSV with a header: numeric feature columns, a class column of any type."""
    import pandas as pd

    if not path or not Path(path).is_file():
        raise ConfigError("data.path", path, "a readable CSV file")
    frame = pd.read_csv(path)
    if frame.empty:
        raise ConfigError("data.path", path, "a CSV with rows: it has a header and no rows")
    if target not in frame.columns:
        raise ConfigError("data.target", target, f"one of the columns {list(frame.columns)}")
    columns = list(features) if features else [c for c in frame.columns if c != target]
    missing = [c for c in columns if c not in frame.columns or c == target]
    if missing or not columns:
        raise ConfigError("data.features", features, f"columns of {path} other than {target!r}")
    chosen = frame[columns]
    non_numeric = [c for c in columns if not pd.api.types.is_numeric_dtype(chosen[c])]
    if non_numeric:
        raise ConfigError("data.features", non_numeric, "numeric columns only")
    used = frame[[*columns, target]]
    if used.isna().any().any():
        gaps = used.isna()
        named = [c for c in used.columns if gaps[c].any()]
        raise ConfigError(
            "data.path",
            path,
            f"a CSV without missing values: {int(gaps.any(axis=1).sum())} row(s) miss values "
            f"in column(s) {named}",
        )
    labels = frame[target].to_numpy()
    if len(set(labels.tolist())) < 2:
        raise ConfigError(
            "data.target", target, f"a column with two classes or more: every row is {labels[0]!r}"
        )
    return _table(chosen.to_numpy(), labels)


def load(
    name: str,
    data_dir: str | Path,
    mirrors: Sequence[str] = (),
    path: str | None = None,
    target: str | None = None,
    features: Sequence[str] | None = None,
) -> Arrays:
    """Load a dataset by name; canonical files are verified (and fetched if missing)."""
    if name in ("mnist", "fashion_mnist"):
        return load_idx_dataset(name, Path(data_dir), mirrors)
    if name == "sonar":
        return load_sonar(Path(data_dir), mirrors)
    if name == "digits":
        return load_digits()
    if name == "csv":
        return load_csv(path, target, features)
    raise ConfigError("data.name", name, f"one of {', '.join(DATASETS)}")
