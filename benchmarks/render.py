"""Every docs/ table of measured figures, rendered from the JSON the benchmarks write under benchmarks/results/: one
script, so that no figure is typed by hand and each is rendered one way. A page is either rendered whole (PAGES) or is
prose with rendered blocks between `<!-- rendered: NAME -->` and `<!-- end rendered -->` (BLOCKS).

    python -m benchmarks.render           # rewrite every page whose JSON is there
    python -m benchmarks.render --check   # exit 1 naming each page that differs from what its JSON renders
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks import large_batch, performance, recipe, seeds, verdict
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


def _archived(results: Path, key: str, render_one: Callable[[dict], str]) -> str | None:
    """The archived results under `key` of recipe-large-archived.json, each rendered, one after another."""
    path = results / "recipe-large-archived.json"
    return "\n\n".join(render_one(r) for r in read_result(path)[key]) if path.exists() else None


def _recipe_cpu(results: Path) -> str | None:
    """The recipe benchmark's CPU tables from recipe-cpu.json."""
    path = results / "recipe-cpu.json"
    return recipe.render_markdown(read_result(path)) if path.exists() else None


def _verdict_rates(results: Path) -> str | None:
    """The README's table of the verdict's false-alarm rate and power from verdict.json."""
    path = results / "verdict.json"
    return verdict.readme_rates(read_result(path)) if path.exists() else None


BLOCKS: dict[str, dict[str, Callable[[Path], str | None]]] = {  # docs/<page> -> {block name -> its renderer}
    "../README.md": {"verdict-rates": _verdict_rates},
    "recipe.md": {
        "recipe-cpu": _recipe_cpu,
        "recipe-large-archived": lambda results: _archived(results, "recipe", recipe.render_markdown),
        "large-batch-archived": lambda results: _archived(results, "large_batch", large_batch.render_markdown),
    },
}
BLOCK = re.compile(r"(<!-- rendered: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- end rendered -->)", re.S)


def fill_blocks(text: str, renderers: dict[str, Callable[[Path], str | None]], results: Path) -> str:
    """`text` with each marked block replaced by what its renderer makes of `results` (kept where its JSON is not
    there); an unknown name is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in renderers:
            raise ValueError(f"rendered block {name!r}: no renderer (known: {', '.join(sorted(renderers))})")
        body = renderers[name](results)
        return match[0] if body is None else f"{match[1]}{body.rstrip()}\n{match[4]}"

    return BLOCK.sub(fill, text)


def render(results: Path = RESULTS, docs: Path = DOCS) -> dict[str, str]:
    """Every page whose JSON is in `results` (block pages read from `docs` and filled), by file name."""
    pages = {name: make(results) for name, make in PAGES.items()}
    for name, renderers in BLOCKS.items():
        if (docs / name).exists():
            pages[name] = fill_blocks((docs / name).read_text(), renderers, results)
    return {name: text for name, text in pages.items() if text is not None}


def main(argv: list[str] | None = None) -> int:
    """Write the pages into --docs (or with --check, name those that differ); 0, or 1 when --check finds a stale page."""
    p = argparse.ArgumentParser(description="render docs/ pages from benchmarks/results/*.json")
    p.add_argument("--results", default=str(RESULTS), help="the folder of benchmark JSON")
    p.add_argument("--docs", default=str(DOCS), help="the folder the pages go to")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs from its JSON")
    args = p.parse_args(argv)
    stale = []
    for name, text in render(Path(args.results), Path(args.docs)).items():
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
