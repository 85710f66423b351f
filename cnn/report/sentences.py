"""The comparison in a few sentences, from the numbers: best variant, accuracy per parameter, shared confusions, flags."""

from __future__ import annotations

from collections.abc import Sequence

from cnn.markdown import md_escape
from cnn.report.analysis import Pair, common_confusions
from cnn.report.metrics import HEADLINE, NOT_LEARNED, SCORE, accuracy_per_1k_params, pair_text
from cnn.report.rows import FALLBACK_NOTE, Row, is_ok, learned
from cnn.report.summaries import settings_differences


def summary_sentences(summaries: Sequence[Row], common: Sequence[Pair] | None = None, *, markdown: bool = True) -> str:
    """Two to four sentences: best variant, best accuracy per 1k params, shared confusions, LR flags, fallbacks
    (Markdown-escaped unless `markdown` is False)."""
    esc = md_escape if markdown else str
    common = common_confusions(summaries) if common is None else common
    finished = [s for s in summaries if is_ok(s)]
    ok = [s for s in finished if learned(s)]
    idle = [s["variant"] for s in finished if not learned(s)]
    failed = [s["variant"] for s in summaries if not is_ok(s)]
    if not finished:
        return f"No variant finished ({len(failed)} failed)."
    if not ok:
        return (
            f"No variant learned: every finished variant stayed at chance level ({', '.join(idle)}), so there is no winner; check the LR curves and the settings."
            + (f" Failed: {', '.join(failed)}." if failed else "")
        )
    best = max(ok, key=lambda s: s[HEADLINE])
    spread = (
        f" \u00b1 {best[f'{HEADLINE}_std']:{SCORE}} over {best['n_seeds']} seeds" if best.get("n_seeds", 1) > 1 else ""
    )
    sentences = [f"{best['variant']} is the most accurate variant with {best[HEADLINE]:{SCORE}} test accuracy{spread}."]
    sized = [s for s in ok if s.get("params")]
    if sized:
        thrifty = max(sized, key=lambda s: accuracy_per_1k_params(s[HEADLINE], s["params"]))
        sentences.append(
            f"{thrifty['variant']} gets the most accuracy per parameter: {accuracy_per_1k_params(thrifty[HEADLINE], thrifty['params']):.3g} per 1k parameters ({thrifty['params']:,} parameters)."
        )
    if common and len(ok) > 1:
        sentences.append(f"Every variant confuses {', '.join(esc(pair_text(t, p)) for t, p in common)}.")
    flagged = [f"{s['variant']} ({str(s['lr_flag']).replace('_', ' ')})" for s in ok if s.get("lr_flag")]
    if flagged:
        sentences.append(f"The LR finder flagged {', '.join(flagged)}: check those curves (\u26a0 in the LR column).")
    retried = fallback_notes(finished)
    if retried:
        sentences.append(f"Trained at a fallback setting after a failed attempt: {esc(', '.join(retried))}.")
    if idle:
        sentences.append(
            f"Did not learn ({NOT_LEARNED}: test accuracy not clearly above chance, left out of the ranking): {', '.join(idle)}."
        )
    if failed:
        sentences.append(f"Failed: {', '.join(failed)}.")
    mixed = settings_differences(finished)
    if mixed:
        sentences.append(f"Rows were trained with different settings: {mixed}.")
    return " ".join(sentences)


def fallback_notes(summaries: Sequence[Row]) -> list[str]:
    """ "alexnet (collapsed at adam 0.003)" for each row whose training abandoned an attempt (from its LR rule)."""
    notes = []
    for s in summaries:
        rule = str(s.get("lr_rule") or "")
        if FALLBACK_NOTE in rule:
            notes.append(f"{s['variant']} ({rule.split(FALLBACK_NOTE, 1)[1]})")
    return notes
