"""Every docs/ page of measured figures, rendered from the JSON the benchmarks write under benchmarks/results/: one
script, so that no figure is typed by hand and each is rendered one way.

    python -m benchmarks.render           # rewrite every page whose JSON is there
    python -m benchmarks.render --check   # exit 1 naming each page that differs from what its JSON renders
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks import performance, seeds, verdict
from benchmarks.record import RESULTS, read_result

DOCS = Path(__file__).parents[1] / "docs"


def seeds_page(results: Path) -> str | None:
    """docs/seeds.md from seeds-cpu.json (and seeds-cuda.json where a GPU run wrote one)."""
    pages = [
        seeds.markdown_page(read_result(p))
        for p in (results / "seeds-cpu.json", results / "seeds-cuda.json")
        if p.exists()
    ]
    return "\n".join(pages) if pages else None


def verdict_page(results: Path) -> str | None:
    """docs/verdict.md from verdict.json."""
    path = results / "verdict.json"
    return verdict.render_markdown(read_result(path), f"benchmarks/results/{path.name}") if path.exists() else None


PAGES: dict[str, Callable[[Path], str | None]] = {  # docs/<name> -> its renderer over the results folder
    "seeds.md": seeds_page,
    "verdict.md": verdict_page,
    "performance.md": performance.page,
}


def render(results: Path = RESULTS) -> dict[str, str]:
    """Every page whose JSON is in `results`, by file name."""
    pages = {name: make(results) for name, make in PAGES.items()}
    return {name: text for name, text in pages.items() if text is not None}


def main(argv: list[str] | None = None) -> int:
    """Write the pages into --docs (or with --check, name those that differ); 0, or 1 when --check finds a stale page."""
    p = argparse.ArgumentParser(description="render docs/ pages from benchmarks/results/*.json")
    p.add_argument("--results", default=str(RESULTS), help="the folder of benchmark JSON")
    p.add_argument("--docs", default=str(DOCS), help="the folder the pages go to")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs from its JSON")
    args = p.parse_args(argv)
    stale = []
    for name, text in render(Path(args.results)).items():
        path = Path(args.docs) / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)} (run python -m benchmarks.render)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
