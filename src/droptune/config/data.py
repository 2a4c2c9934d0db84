"""The data group: one schema per dataset variant, picked by `data.name`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, field_validator, model_validator

from droptune import targets
from droptune.config.types import (
    Allowed,
    Fraction,
    Group,
    IntList,
    Open,
    PositiveInt,
    TestFraction,
    _given,
    one_of,
    require,
)


class DataBase(Group):
    batch_size: PositiveInt
    val_fraction: Fraction
    cv_folds: Annotated[
        Annotated[int, Field(ge=2)] | None,
        Allowed("null (one train/val split) or an integer >= 2"),
    ]


class Downloaded(DataBase):
    """MNIST and Fashion-MNIST: their own test set, so no test_fraction."""

    name: Literal["mnist", "fashion_mnist"]
    mirrors: list[str]
    standardize: bool


class Sonar(DataBase):
    name: Literal["sonar"]
    mirrors: list[str]
    test_fraction: TestFraction
    standardize: bool


class Digits(DataBase):
    name: Literal["digits"]
    test_fraction: TestFraction
    standardize: bool


class Csv(DataBase):
    name: Literal["csv"]
    path: Annotated[str | None, Allowed("the path of a CSV file")]
    target: Annotated[str | None, Allowed("the label column's name")]
    features: Annotated[list[str] | None, Allowed("null (every other column) or a list of names")]
    test_fraction: TestFraction
    standardize: bool

    @model_validator(mode="after")
    def _path_and_target(self) -> Csv:
        require(bool(self.path), "data.path", self.path, "the path of a CSV file")
        require(bool(self.target), "data.target", self.target, "the label column's name")
        return self


ImageSize = Annotated[
    PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None,
    Allowed("[height, width], one int >= 1, or null"),
]


class ImageFolder(DataBase):
    name: Literal["image_folder"]
    root: _given("a folder of class folders")
    image_size: ImageSize
    mode: one_of(("RGB", "L"))
    max_resident_bytes: Annotated[PositiveInt | None, Allowed("an integer >= 1 or null")]
    num_workers: Annotated[int, Field(ge=0), Allowed("an integer >= 0")]
    test_fraction: TestFraction
    standardize: bool


class CustomData(Open):
    """A user's LightningDataModule: every key but these is an argument of its `_target_`."""

    target: Annotated[_given("a dotted path to a class or function"), Field(alias="_target_")]
    name: Literal["custom"]
    batch_size: PositiveInt
    input_shape: Annotated[IntList | None, Allowed("null or a non-empty list of integers >= 1")]
    n_classes: Annotated[PositiveInt | None, Allowed("an integer >= 1 or null")]
    val_fraction: Fraction
    test_fraction: TestFraction
    cv_folds: Annotated[None, Allowed("null: a user's DataModule splits its own data")]

    @field_validator("target")
    @classmethod
    def _imports(cls, target: str) -> str:
        targets.resolve("data._target_", target)
        return target


Data = Annotated[
    Downloaded | Sonar | Digits | Csv | ImageFolder | CustomData, Discriminator("name")
]
