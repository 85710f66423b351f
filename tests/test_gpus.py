"""On a machine with several GPUs each variant running at once gets its own (cnn.gpus), tried with a fake GPU count."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from cnn.gpus import gpu_names, gpu_slot, own_device

ROOT = Path(__file__).resolve().parents[1]


def test_variants_at_once_hold_different_gpus_and_a_freed_one_is_taken_again(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(gpu_slot(3, tmp_path)) for _ in range(3)]
        assert sorted(held) == [0, 1, 2]
        with gpu_slot(3, tmp_path) as extra:  # a fourth variant at once shares one rather than waiting
            assert extra in (0, 1, 2)
    with gpu_slot(3, tmp_path) as again:
        assert again == 0


def test_another_process_gets_another_gpu_and_its_lock_goes_with_it(tmp_path: Path) -> None:
    holder = (
        "import sys, time\nfrom pathlib import Path\nfrom cnn.gpus import gpu_slot\n"
        "with gpu_slot(2, Path(sys.argv[1])) as k:\n    print(k, flush=True)\n    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "0"
        with gpu_slot(2, tmp_path) as mine:
            assert mine == 1
    finally:
        child.kill()
        child.wait(10)
    with gpu_slot(2, tmp_path) as mine:
        assert mine == 0  # a killed process holds nothing


def test_locks_follow_the_physical_gpu_named_by_cuda_visible_devices(tmp_path: Path) -> None:
    assert gpu_names(2, "2,3") == ["2", "3"] and gpu_names(2, None) == ["0", "1"]
    assert gpu_names(2, "GPU-aa,GPU-bb") == ["GPU-aa", "GPU-bb"]
    with gpu_slot(2, tmp_path, visible="0,1") as first, gpu_slot(2, tmp_path, visible="2,3") as second:
        assert first == second == 0  # two workers, each shown its own two GPUs: both start on their own first


@pytest.mark.parametrize(("device", "count", "picked"), [("auto", 4, True), ("cuda", 2, True), ("cuda:3", 4, False)])
def test_auto_and_cuda_get_a_gpu_of_their_own_and_an_explicit_index_is_kept(
    device: str, count: int, picked: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import cnn.gpus

    current = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: current.__setitem__(0, index))
    monkeypatch.setattr(cnn.gpus, "LOCK_DIR", tmp_path)
    with own_device(device) as first, own_device(device) as second:
        if picked:
            assert {first, second} == {"cuda:0", "cuda:1"} and current[0] == 1
        else:
            assert first == second == device
    assert current[0] == 0  # torch's current device put back


def test_one_gpu_or_none_leaves_the_device_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with own_device("auto") as device:
        assert device == "auto"
