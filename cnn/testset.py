"""Which test images a run was scored on (dataset, a hash of the images and labels, size, split seed): the identity a
row records so that only runs on the same test images are ever paired (cnn/report/verdict.py). No torch here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TestSet:
    """Which test images a run was scored on: only runs with equal TestSets are ever paired."""

    __test__ = False  # not a pytest test class

    dataset: str
    fingerprint: str  # hash of the test images and labels (cnn.data.stats.fingerprint)
    size: int
    split_seed: int | None

    def to_dict(self) -> dict[str, Any]:
        """As stored in a row's `test_set`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TestSet | None:
        """A row's stored `test_set` read back (None when absent or not of this shape: rows of earlier versions)."""
        if not isinstance(data, Mapping):
            return None
        try:
            seed = data.get("split_seed")
            test_set = cls(str(data["dataset"]), str(data["fingerprint"]), int(data["size"]), seed)
        except (KeyError, TypeError, ValueError):
            return None
        ok_seed = seed is None or (isinstance(seed, int) and not isinstance(seed, bool))
        return test_set if test_set.size > 0 and ok_seed else None

    def describe(self) -> str:
        """ "digits, 360 test images (split seed 0, a1b2c3d4)"."""
        return f"{self.dataset}, {self.size} test images (split seed {self.split_seed}, {self.fingerprint[:8]})"
