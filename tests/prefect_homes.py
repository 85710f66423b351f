"""Prefect homes for the tests' servers and CLI runs, each starting from one migrated database.

A fresh PREFECT_HOME makes the first server on it run every database migration (seconds); the tests make many homes,
so each test process migrates one template database once and copies it into each new home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_TEMPLATE: Path | None = None


def _template() -> Path:
    """This process's migrated prefect.db (made on first use by `prefect server database upgrade`)."""
    global _TEMPLATE
    if _TEMPLATE is None or not _TEMPLATE.exists():
        home = Path(tempfile.mkdtemp(prefix="cnn-lab-prefect-template-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
        cmd = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
        _TEMPLATE = home / "prefect.db"
    return _TEMPLATE


def migrated_home(home: Path) -> Path:
    """`home` made (if missing) with a migrated prefect.db in it, unless it already has one; returns `home`."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "prefect.db").exists():
        shutil.copyfile(_template(), home / "prefect.db")
    return home
