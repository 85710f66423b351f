"""Escaping user-controlled text (paths, class names, error messages) for the Markdown that artifacts and reports show."""

from __future__ import annotations

from typing import Any

# HTML as entities (no raw tag reaches a renderer), Markdown's link, code, emphasis and table characters backslashed
_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "\\": "\\\\",
        "`": "\\`",
        "*": "\\*",
        "[": "\\[",
        "]": "\\]",
        "|": "\\|",
        "\n": " ",
        "\r": " ",
    }
)


def md_escape(value: Any) -> str:
    """`value` as inline Markdown text that renders as itself: no HTML, links, code spans, emphasis or table breaks."""
    return str(value).translate(_ESCAPES)
