"""Every command block of README.md runs as written, or is marked with why it cannot run in a test.

A ```bash block runs offline, in a fresh folder, with the project's venv first on the PATH (and as `.venv`), in the
README's order: later blocks use what earlier ones left (a retrain needs its comparison). A ```python block whose first
line is `# <file>.py` is a file the README asks the reader to write; it is written into that folder first. A block that
cannot run here has `<!-- needs: REASON -->` on the line above it, REASON one of NEEDS.
"""

from __future__ import annotations

from prefect_homes import migrated_home

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from flows.cli import QUICKSTART

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NEEDS = {
    "network": "installs from PyPI or downloads data",
    "server": "a server that stays up (Prefect, S3, a Dask scheduler)",
    "gpu": "an NVIDIA GPU",
}
_FENCE = re.compile(r"^```(?P<lang>\S*)\n(?P<body>.*?)^```$", re.M | re.S)
_NEEDS = re.compile(r"<!--\s*needs:\s*(?P<reason>.*?)\s*-->")
_FILE = re.compile(r"# (?P<name>[\w.-]+\.py)\n")
# Any download goes through this proxy, where nothing listens: a block that needs the network fails instead of
# passing on a machine that happens to be online. The temporary Prefect server is reached directly.
_NO_NETWORK = {
    **{name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, the line its fence opens on, and the reason it is marked with (if any)."""

    lang: str
    body: str
    line: int
    needs: str | None


def read_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order, each with the `needs` mark on the line right above its fence."""
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _NEEDS.fullmatch(above.strip())
        blocks.append(Block(match["lang"], match["body"], line, mark["reason"] if mark else None))
    return blocks


def unknown_marks(blocks: list[Block]) -> list[str]:
    """'line N: reason' for each block marked with a reason not in NEEDS."""
    return [f"line {b.line}: {b.needs!r}" for b in blocks if b.needs is not None and b.needs not in NEEDS]


def test_blocks_are_read_with_the_mark_right_above_them() -> None:
    text = "intro\n<!-- needs: network -->\n```bash\npip install x\n```\n\n```bash\ncnn-lab variants\n```\n"
    text += "<!-- needs: a quiet afternoon -->\n```bash\nsleep 1\n```\n```python\n# my.py\nx = 1\n```\n"
    blocks = read_blocks(text)
    assert [(b.lang, b.line, b.needs) for b in blocks] == [
        ("bash", 3, "network"),
        ("bash", 7, None),
        ("bash", 11, "a quiet afternoon"),
        ("python", 14, None),
    ]
    assert blocks[1].body == "cnn-lab variants\n"
    assert unknown_marks(blocks) == ["line 11: 'a quiet afternoon'"]


def test_every_mark_in_the_readme_names_a_known_reason() -> None:
    blocks = read_blocks(README.read_text())
    fences = [line for line in README.read_text().splitlines() if line.startswith("```bash")]
    assert len([b for b in blocks if b.lang == "bash"]) == len(fences), "a ```bash block the reader did not find"
    assert unknown_marks(blocks) == [], f"allowed reasons: {sorted(NEEDS)}"


def test_the_readme_quickstart_is_the_clis_and_the_first_commands_main_job() -> None:
    bash = [b for b in read_blocks(README.read_text()) if b.lang == "bash"]
    assert any(b.body.strip() == QUICKSTART and b.needs is None for b in bash), "the quickstart block runs as written"
    main_job = QUICKSTART.replace("cnn-lab ", ".venv/bin/cnn-lab ", 1)
    assert any(b.body.strip().endswith(f"&& {main_job}") for b in bash), "the new machine's main job is the quickstart"


def _readme_env(home: Path) -> dict[str, str]:
    """The environment the blocks run in: the venv's scripts first, this checkout's code, a Prefect home of its own and
    no PREFECT_API_URL (the CLI's temporary server), no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        _NO_NETWORK,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",  # beside the suite's other workers on a small machine: no spinning torch threads
        PREFECT_HOME=str(migrated_home(home / "prefect-home")),
    )
    return env


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_every_unmarked_readme_block_runs_offline_in_a_fresh_folder(tmp_path: Path) -> None:
    blocks = read_blocks(README.read_text())
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    for block in blocks:
        named = _FILE.match(block.body)
        if block.lang == "python" and named:
            (tmp_path / named["name"]).write_text(block.body)
    env = _readme_env(tmp_path)
    ran = []
    for block in (b for b in blocks if b.lang == "bash" and b.needs is None):
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.body],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        where = f"README.md line {block.line}:\n{block.body}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        assert done.returncode == 0, where
        assert "Traceback" not in done.stderr and "| WARNING" not in done.stderr, where
        assert "✗" not in done.stdout, f"a variant did not learn: {where}"
        ran.append(block.line)
    assert len(ran) >= 4, "the quickstart, the venv, a retrain and the plug-ins at least"
