"""The shape of each step's result, checked when a cached one is read back: a cached record is a file in the shared
store, so a record of the right format holding a field of the wrong type is possible, and without this check it would
fail its variant on every rerun (flows/variant_steps.py reruns the step, which replaces the record)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Score = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Size = Annotated[int, Field(ge=0)]
Path = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", max_length=1000)]


class _Result(BaseModel):
    """The keys later steps read (others may be there too)."""

    model_config = ConfigDict(extra="allow")


class DatasetResult(_Result):
    name: str
    classes: list[str] = Field(min_length=1)
    channels: Annotated[int, Field(ge=1)]
    image_size: Annotated[int, Field(ge=1)]
    num_train: Size
    num_val: Size
    num_test: Size
    fingerprint: str


class LRResult(_Result):
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    rule: str
    flag: str | None = None


class TrainedSeed(_Result):
    variant: str
    seed: Size
    params: Size
    input_size: Annotated[int, Field(ge=1)]
    folder: str
    folder_rel: Path
    model_id: Annotated[str, Field(pattern=r"^[0-9a-f]{24}$")]
    epochs: Annotated[int, Field(ge=1)]
    config: dict[str, Any]
    fallbacks: list[str]
    learned: bool
    best_val_acc: Score
    seconds: Amount
    images_per_sec: Amount
    history: list[dict[str, Any]]


class EvalResult(_Result):
    accuracy: Score
    macro_f1: Score
    per_class_f1: dict[str, Score]
    confusion: list[list[Size]]
    most_confused: list[dict[str, Any]]
    params: Size


class FeaturesResult(_Result):
    layers: list[str]
    filters: list[str]
    feature_maps: list[str]


SCHEMAS: dict[str, TypeAdapter[Any]] = {
    "dataset": TypeAdapter(DatasetResult),
    "lr": TypeAdapter(LRResult),
    "train": TypeAdapter(list[TrainedSeed]),
    "evaluate": TypeAdapter(EvalResult),
    "features": TypeAdapter(FeaturesResult),
}


def result_problem(step: str, result: Any) -> str | None:
    """What is wrong with `step`'s result ("field: why", the first problem), or None when it has the step's shape."""
    try:
        SCHEMAS[step].validate_python(result)
    except ValidationError as err:
        first = err.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'the result'}: {first['msg']}"
    return None
