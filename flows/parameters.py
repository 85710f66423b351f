"""Flow signatures made from cnn.params.RunParams: one typed, described parameter per field (no prefect import here).

Prefect reads a flow's parameters from its signature and their descriptions from the docstring's Args section: each
parameter gets the field's type (with the checks and the schema the UI form shows), its default and its description.
The flow function itself takes `**values` and builds the model from them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

from cnn.params import RunParams, recorded_fields

F = TypeVar("F", bound=Callable[..., Any])

VARIANT_ONLY = ("variant", "subdir", "repeat")
COMPARE_ONLY = ("comparison", "variants", "repeats", "max_seeds", "parallel", "task_runner", "train_deployment")
COMPARE_FIELDS = tuple(name for name in RunParams.model_fields if name not in VARIANT_ONLY)
VARIANT_FIELDS = tuple(name for name in RunParams.model_fields if name not in COMPARE_ONLY)
# A retrain: which variant of which comparison, where; every setting the comparison records (cnn.comparisons) is an
# optional override, empty (None) meaning "as the comparison"
RETRAIN_PLACE = (
    "variant",
    "comparison",
    "dataset",
    "storage",
    "data_dir",
    "device",
    "run",
    "variant_files",
    "variant_modules",
    "storage_block",
)
# max_seeds only says how the comparison's verdict was reached (its looks): a retrain keeps the comparison's
RETRAIN_OVERRIDES = tuple(name for name in recorded_fields() if name not in (*RETRAIN_PLACE, "max_seeds"))
RETRAIN_FIELDS = tuple(name for name in RunParams.model_fields if name in RETRAIN_PLACE or name in RETRAIN_OVERRIDES)
# A train-variant flow run's name: its variant, the seed it trains (seed + repeat), the dataset
VARIANT_RUN_NAME = "{variant}-s{seed}-on-{dataset}"


def flow_signature(fields: Iterable[str], optional: Iterable[str] = ()) -> inspect.Signature:
    """Keyword parameters for `fields` in the model's order, typed as the model types them, with its defaults; the
    `optional` ones default to None (and accept it): a value left out."""
    parameters, optional = [], set(optional)
    for name in fields:
        info = RunParams.model_fields[name]
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        default = info.default
        if name in optional:
            annotation, default = annotation | None, None
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    return inspect.Signature(parameters)


def flow_docstring(summary: str, fields: Iterable[str], notes: Mapping[str, str] | None = None) -> str:
    """`summary` and an Args section with each field's description (and its note, e.g. the built-in names)."""
    lines = [summary.strip(), "", "Args:"]
    for name in fields:
        text = RunParams.model_fields[name].description or ""
        lines.append(f"    {name}: {text} {(notes or {}).get(name, '')}".rstrip())
    return "\n".join(lines)


def run_parameters(
    fields: Iterable[str], notes: Mapping[str, str] | None = None, optional: Iterable[str] = ()
) -> Callable[[F], F]:
    """Decorator (below @flow): give `fn(**values)` the fields as its signature (the `optional` ones defaulting to
    None) and their descriptions as its Args."""
    names, optional = tuple(fields), tuple(optional)

    def apply(fn: F) -> F:
        fn.__signature__ = flow_signature(names, optional)  # type: ignore[attr-defined]
        fn.__doc__ = flow_docstring(fn.__doc__ or "", names, notes)
        return fn

    return apply
