"""A folder of class sub-folders (torchvision's ImageFolder conventions): decoded once into a
resident uint8 array when it fits in `max_resident_bytes`, else streamed from the files.

torchvision's ImageFolder finds the classes and files; decoding goes through PIL with a fixed mode
and size, so every image has one shape and a bad file is named before any trial starts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from droptune.data.datasets import Arrays
from droptune.data.download import DataFileError
from droptune.data.module import stratifiable
from droptune.data.streamed import SplitImages, Streamed, probe_index
from droptune.errors import ConfigError

MODES = {"L": 1, "RGB": 3}
STATS_SAMPLE = 256  # training images the streamed path's mean and std are taken from


def device_memory_bytes() -> int:
    """The training device's memory: the GPU's, else this machine's RAM."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class FolderSpec:
    """data=image_folder's keys."""

    root: str
    image_size: int | Sequence[int] | None = None
    mode: str = "RGB"
    max_resident_bytes: int | None = None  # None: a quarter of the device's memory
    num_workers: int = 0

    @property
    def size(self) -> tuple[int, int] | None:
        if self.image_size is None:
            return None
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        return tuple(self.image_size)


def _decode(path: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (channels, height, width) uint8; a file PIL cannot read is named."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DataFileError(f"{path} cannot be decoded as an image ({error})") from error
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _scan(spec: FolderSpec) -> tuple[list[tuple[str, int]], list[str]]:
    from torchvision.datasets import ImageFolder

    if not Path(spec.root).is_dir():
        raise ConfigError("data.root", spec.root, "a folder with one sub-folder per class")
    try:
        found = ImageFolder(spec.root, allow_empty=True)
    except FileNotFoundError as error:  # no class folders at all
        raise ConfigError(
            "data.root", spec.root, f"a folder of class sub-folders ({error})"
        ) from None
    counts = np.bincount([label for _, label in found.samples], minlength=len(found.classes))
    if len(found.classes) < 2 or (counts > 0).sum() < 2:
        raise ConfigError(
            "data.root", spec.root, f"at least two classes with images; found {found.classes}"
        )
    empty = [name for name, count in zip(found.classes, counts, strict=True) if count == 0]
    if empty:
        raise ConfigError("data.root", spec.root, f"images in every class folder; empty: {empty}")
    return found.samples, found.classes


def _shape(samples: Sequence[tuple[str, int]], spec: FolderSpec) -> tuple[int, int, int]:
    """Every image's shape after decoding: the first one's unless data.image_size sets it (images
    of another size are resized to it)."""
    size = spec.size or _decode(samples[0][0], spec.mode, None).shape[1:]
    return (MODES[spec.mode], *size)


class FolderImages(Dataset):
    """Images decoded on access, standardised with the training part's mean and std."""

    def __init__(self, samples, spec: FolderSpec, shape, mean: float, std: float) -> None:
        self.samples, self.spec, self.shape = samples, spec, shape
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        pixels = _decode(path, self.spec.mode, self.shape[1:])
        x = (torch.from_numpy(pixels).float() / 255.0 - self.mean) / self.std
        return x, label


def load_image_folder(spec: FolderSpec, test_fraction: float, seed: int) -> Arrays | Streamed:
    """The folder as resident arrays if it fits, else as a streamed source with the same splits."""
    samples, classes = _scan(spec)
    shape = _shape(samples, spec)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    budget = spec.max_resident_bytes or device_memory_bytes() // 4
    if len(samples) * int(np.prod(shape)) <= budget:
        pixels = np.stack([_decode(path, spec.mode, shape[1:]) for path, _ in samples])
        return Arrays(pixels, labels, None, None, classes, shape, 255.0)
    for path, _ in samples:  # every file opens (header check) before any trial, not mid-study
        _verify(path)
    indices = np.arange(len(samples))
    test = np.array([], dtype=np.int64)
    if test_fraction:
        with stratifiable("data.test_fraction", test_fraction, labels, classes):
            indices, test = train_test_split(
                indices, test_size=test_fraction, stratify=labels, random_state=seed
            )
        indices, test = np.sort(indices), np.sort(test)
    sample = np.random.default_rng(seed).permutation(indices)[:STATS_SAMPLE]
    scaled = np.stack([_decode(samples[i][0], spec.mode, shape[1:]) for i in sample]) / 255.0
    dataset = FolderImages(samples, spec, shape, float(scaled.mean()), float(scaled.std()) or 1.0)

    def datamodule(train_index, val_index, batch_size: int, fit_seed: int) -> SplitImages:
        train, val = indices[train_index], indices[val_index]
        parts = {
            "train": train,
            "val": val,
            "train_probe": probe_index(train, len(val), fit_seed),
            "test": test,
        }
        return SplitImages(dataset, parts, batch_size, fit_seed, spec.num_workers)

    return Streamed(classes, shape, labels[indices], bool(len(test)), datamodule)


def _verify(path: str) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, ValueError) as error:
        raise DataFileError(f"{path} cannot be decoded as an image ({error})") from error
