"""The CLI's torch-free checks (cnn.fastchecks): the mistakes a new user makes end in one line, exit code 2, before
torch or Prefect loads, and they reject nothing the full checks (flows.settings) would accept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnn.catalog import BUILTIN_VARIANTS, DATASETS
from cnn.errors import CnnLabError
from cnn.fastchecks import cuda_impossible, fast_checks
from cnn.params import parse_params

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_VARIANTS = ", ".join(BUILTIN_VARIANTS)
HEAVY = ("torch", "torchvision", "prefect", "pandas", "matplotlib")  # seconds to import; the fast path needs none
# The cases (README quickstart with one mistake each): argv, the one line on stderr
CASES = [
    (
        ["compare", "--dataset", "digts"],
        "cnn-lab: dataset: unknown dataset 'digts'; did you mean 'digits'? (allowed: cifar10, cifar100, digits, fashion-mnist, fashionmnist, kmnist, mnist, qmnist, stl10, svhn, usps)",
    ),
    (
        ["compare", "--dataset", "digits", "--epochs", "0"],
        "cnn-lab: epochs: must be 'auto' or an integer in [1, 10000], got '0' (allowed: 'auto' or an integer in [1, 10000])",
    ),
    (
        ["compare", "--dataset", "digits", "--lr", "-1"],
        "cnn-lab: lr: must be 'auto' or a finite number in (0, 1000], got '-1' (allowed: 'auto' or a finite number in (0, 1000])",
    ),
    (
        ["compare", "--dataset", "digits", "--variants", "generic_2,generic_2"],
        "cnn-lab: variants: duplicates in ['generic_2', 'generic_2'] (allowed: each variant once)",
    ),
    (
        ["compare", "--dataset", "digits", "--storage", "/etc/hostname"],
        "cnn-lab: storage: cannot write to /etc/hostname: a file is in the way: part of the path is a file, not a folder ([Errno 17] File exists: '/etc/hostname')",
    ),
    (
        ["compare", "--dataset", "digits", "--variants", "lenet1,cnn25"],
        f"cnn-lab: variants: unknown variant 'cnn25'; did you mean 'cnn2_5'? (allowed: {ALLOWED_VARIANTS})",
    ),
    (
        ["retrain", "cnn25", "--dataset", "digits"],
        f"cnn-lab: variant: unknown variant 'cnn25'; did you mean 'cnn2_5'? (allowed: {ALLOWED_VARIANTS})",
    ),
]
if cuda_impossible():
    CASES.append(
        (
            ["compare", "--dataset", "digits", "--device", "cuda"],
            "cnn-lab: device: CUDA was requested but no GPU is available (allowed: auto, cpu)",
        )
    )


def test_the_catalog_names_what_the_registries_register() -> None:
    from cnn.data import list_datasets
    from cnn.data.registry import _REGISTRY
    from cnn.models import builtin_variants

    assert list(BUILTIN_VARIANTS) == builtin_variants()
    assert set(DATASETS) <= set(_REGISTRY) and "digits" in list_datasets()


def test_each_mistake_is_one_line_and_exit_code_2_before_torch_or_prefect_loads(tmp_path: Path) -> None:
    code = (
        "import contextlib, io, json, sys\n"
        "from flows.cli import main\n"
        "out = []\n"
        f"for argv in {json.dumps([argv for argv, _ in CASES])}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        rc = main(argv)\n"
        "    out.append([rc, err.getvalue()])\n"
        f"print(json.dumps({{'runs': out, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=120,
    )
    result = json.loads(done.stdout)
    assert result["heavy"] == [], "a heavy library loaded for a mistake the fast checks catch"
    assert [tuple(r) for r in result["runs"]] == [(2, line + "\n") for _, line in CASES]


@pytest.mark.parametrize(
    "values",
    [
        {"variants": ["lenet1", "cnn25"]},
        {"dataset": "digts"},
        {"dataset": "fashion_mnist"},
        {
            "variants": ["lenet1", "mine"],
            "variant_files": {"mine": str(ROOT / "examples" / "generic_small.json")},
            "dataset": "imagenet",
        },
    ],
)
def test_the_fast_checks_give_the_full_checks_words(values: dict, tmp_path: Path) -> None:
    from flows.settings import prepare_run

    params = parse_params({**values, "storage": str(tmp_path)})
    with pytest.raises(CnnLabError) as fast:
        fast_checks(params)
    with pytest.raises(CnnLabError) as full:
        prepare_run(params)
    assert str(fast.value) == str(full.value)


def test_the_fast_checks_pass_file_variants_case_free_datasets_and_leave_modules_to_the_registry(
    tmp_path: Path,
) -> None:
    fast_checks(
        parse_params(
            {
                "variants": ["lenet1"],
                "variant_files": {"mine": "x.json"},
                "dataset": "CIFAR100",
                "storage": str(tmp_path),
            }
        )
    )
    fast_checks(
        parse_params({"variants": ["from_my_module"], "variant_modules": ["my_nets"], "storage": str(tmp_path)})
    )  # the module may register it
    fast_checks(
        parse_params({"variant": "mine", "variant_files": {"mine": "x.json"}, "storage": str(tmp_path)}), ["mine"]
    )
