"""The comparison in a few sentences, from the numbers: the verdict (a lone winner only when the paired tests say so,
else the group tied for best), accuracy per parameter within that group, shared confusions, flags."""

from __future__ import annotations

from collections.abc import Sequence

from cnn.markdown import md_escape
from cnn.report.analysis import TOP_CONFUSIONS, Pair, common_confusions
from cnn.report.metrics import HEADLINE, NOT_LEARNED, SCORE, accuracy_per_1k_params, pair_text
from cnn.report.rows import FALLBACK_NOTE, Row, is_ok, learned
from cnn.report.summaries import settings_differences
from cnn.report.verdict import BEST, MCNEMAR, MIN_SEEDS, TIED, WORSE


def summary_sentences(summaries: Sequence[Row], common: Sequence[Pair] | None = None, *, markdown: bool = True) -> str:
    """Two to four sentences: the verdict, the tied group's best accuracy per 1k params, shared confusions, LR flags,
    fallbacks (Markdown-escaped unless `markdown` is False); the verdict's fields come from verdict.with_verdict."""
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
    sentences = verdict_sentences(ok)
    thrifty = efficiency_sentence(ok)
    if thrifty:
        sentences.append(thrifty)
    if common and len(ok) > 1:
        shared = ", ".join(esc(pair_text(t, p)) for t, p in common)
        sentences.append(f"Every variant has {shared} among its {TOP_CONFUSIONS} most common confusions.")
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


def _accuracy(s: Row, noun: str = "") -> str:
    """ "0.781 test accuracy ± 0.003 over 3 seeds (95% CI 0.733–0.826)" for a summary (`noun` after the number; the
    interval when the verdict gave one)."""
    seeds = s.get("n_seeds", 1)
    text = (
        f"{s[HEADLINE]:{SCORE}}"
        + (f" {noun}" if noun else "")
        + (f" \u00b1 {s[f'{HEADLINE}_std']:{SCORE}} over {seeds} seeds" if seeds > 1 else "")
    )
    if s.get("acc_low") is not None and s.get("acc_high") is not None:
        text += f" (95% CI {s['acc_low']:{SCORE}}\u2013{s['acc_high']:{SCORE}})"
    return text


def verdict_sentences(learned_summaries: Sequence[Row]) -> list[str]:
    """The ranking claim with its evidence: one variant named most accurate only when it beats every other learned
    variant significantly on MIN_SEEDS seeds or more (on fewer: its runs ahead on these test images, no verdict), else the
    group tied for best; the test named; variants left untested named."""
    ok = sorted(learned_summaries, key=lambda s: -s[HEADLINE])
    tested = [s for s in ok if s.get("group") in (BEST, TIED, WORSE)]
    untested = [s["variant"] for s in ok if s not in tested]
    if not tested:
        return [
            f"{ok[0]['variant']} has the highest test accuracy: {_accuracy(ok[0])}; no paired test ran (no stored "
            "per-image predictions on one test set), so whether the lead is more than noise is not known."
        ]
    group = [s for s in tested if s["group"] in (BEST, TIED)]
    how = f"{group[0].get('test')}, {group[0].get('n_test')} test images"
    one_seed = str(group[0].get("test")).startswith(MCNEMAR)
    # a claim about the architectures only from MIN_SEEDS seeds a variant: fewer leave the seeds' noise out or
    # under-cover it (docs/verdict.md's false-alarm rates, benchmarks/verdict.py)
    seeds = min(int(s.get("n_seeds") or 1) for s in tested)
    if len(tested) == 1:
        sentences = [f"{group[0]['variant']} is the only variant tested: {_accuracy(group[0], 'test accuracy')}."]
    elif len(group) == 1 and seeds >= MIN_SEEDS:
        sentences = [
            f"{group[0]['variant']} is the most accurate variant with {_accuracy(group[0], 'test accuracy')}: "
            f"significantly above every other variant (p < 0.05; {how})."
        ]
    elif len(group) == 1:  # ahead of the others' trained models, which says nothing yet of the architectures
        sentences = [
            f"On these {group[0].get('n_test')} test images, {group[0]['variant']}'s {_runs(seeds)} every other "
            f"variant's with {_accuracy(group[0], 'test accuracy')}: significantly above them (p < 0.05; {how}), "
            "which is not yet a verdict on the architectures."
        ]
    else:
        rest = (
            "the others are significantly less accurate"
            if len(tested) > len(group)
            else "no variant is significantly more accurate than another"
        )
        members = ", ".join(f"{s['variant']} {s[HEADLINE]:{SCORE}}" for s in group)
        sentences = [f"Tied for best (p \u2265 0.05; {how}): {members}; {rest}."]
    if one_seed and len(tested) > 1:
        sentences.append(
            "With one seed per variant, the test covers the test images' noise, not the seeds' (which can reverse an "
            f"order on a small set); --repeats auto, the default, trains at least {MIN_SEEDS} and covers both."
        )
    elif seeds < MIN_SEEDS and len(tested) > 1:
        sentences.append(
            f"With {seeds} seeds per variant the seeds' noise is under-covered on a small set; --repeats auto, the "
            f"default, trains at least {MIN_SEEDS}."
        )
    if untested:
        sentences.append(f"Not tested (no stored per-image predictions on this test set): {', '.join(untested)}.")
    return sentences


def _runs(seeds: int) -> str:
    """ "trained model beats" for one seed, "2 runs beat" for more."""
    return "trained model beats" if seeds == 1 else f"{seeds} runs beat"


def efficiency_sentence(learned_summaries: Sequence[Row]) -> str | None:
    """Accuracy per parameter compared within the group tied for best only (None for a lone winner or no group)."""
    group = [s for s in learned_summaries if s.get("group") == TIED and s.get("params")]
    if len(group) < 2:
        return None
    thrifty = max(group, key=lambda s: accuracy_per_1k_params(s[HEADLINE], s["params"]))
    return (
        f"Among those tied for best, {thrifty['variant']} gets the most accuracy per parameter: "
        f"{accuracy_per_1k_params(thrifty[HEADLINE], thrifty['params']):.3g} per 1k parameters "
        f"({thrifty['params']:,} parameters)."
    )
