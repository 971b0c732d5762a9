"""Best or tie: a column's best configuration is marked only when it is significantly better than the
runner-up, paired.

The configuration with the best mean and the one with the next best mean are compared on their
runs of the same seed (Student t over the pairs, widened by a bootstrap over test examples where
both logged per-example scores of the metric: :func:`leaderboard.paired.compare`). When the 95%
interval of the paired difference excludes zero in the best one's favour, it is marked best;
otherwise both are marked as a tie, with the interval in the cell's note. One shared seed without
per-example scores gives no interval, so that is a tie too. Several configurations with exactly
the best mean tie as well. The headlines (best at each privacy or cost level) get the same test
against their level's runner-up.
"""

from __future__ import annotations

from leaderboard.aggregate import Column, Section, row_label
from leaderboard.paired import ExampleLoader, compare, fmt_effect
from leaderboard.summary import headlines


def mark_best(section: Section, load: ExampleLoader | None) -> None:
    """Turn ``section.best`` (best means) into significant bests and ties, with a note per column."""
    table = section.table
    for col in section.columns:
        best = section.best.get(col.key)
        if not best:
            continue
        if len(best) > 1:
            section.best.pop(col.key)
            section.ties[col.key] = set(best)
            section.mark_notes[col.key] = f"{len(best)} configurations share the best mean"
            continue
        means = table.set_index("config_id")[f"{col.key} mean"].dropna()
        first = next(iter(best))
        rest = means.drop(first)
        runner = (rest.idxmax() if col.direction == "higher" else rest.idxmin()) if len(rest) else None
        if runner is None:
            continue
        significant, note = _compare(section, col, first, runner, load)
        section.mark_notes[col.key] = note
        if not significant:
            section.best.pop(col.key)
            section.ties[col.key] = {first, runner}


def mark_headlines(section: Section, load: ExampleLoader | None) -> None:
    """The same test for each headline ("best at each level") against the level's runner-up."""
    for h in headlines(section):
        if h.runner_up is not None:
            section.headline_marks[h.level] = _compare(section, h.metric, h.config_id, h.runner_up, load)


def _compare(section: Section, col: Column, best: str, runner: str, load: ExampleLoader | None) -> tuple[bool, str]:
    used = section.runs[section.runs["used"]]
    mine, theirs = used[used["config_id"] == best], used[used["config_id"] == runner]
    by_seed = {int(r["seed"]): r for _, r in theirs.iterrows()}
    pairs = [(r, by_seed[int(r["seed"])]) for _, r in mine.iterrows() if int(r["seed"]) in by_seed]
    # Per-example scores are test utility (predictions, token losses): other columns compare run values.
    result = compare(pairs, metric=col.key, load=load if col.axis == "utility" else None,
                     seed_text=f"{section.slug}|{section.task}|{col.key}")
    ahead = result.interval is not None and (result.low > 0 if col.direction == "higher" else result.high < 0)
    labels = {r["config_id"]: row_label(r, section.settings) for _, r in section.configs.iterrows()}
    if result.interval is None:
        how = f"{result.pairs} run{'s' if result.pairs != 1 else ''} of a shared seed: {result.describe()}"
    else:
        how = (f"paired difference {fmt_effect(result.effect, 'difference')}, 95% interval "
               f"[{fmt_effect(result.low, 'difference')}, {fmt_effect(result.high, 'difference')}] "
               f"({result.interval.describe()})")
    verb = "significantly better than" if ahead else "not significantly better than"
    return ahead, f"{labels.get(best, best)} is {verb} the runner-up {labels.get(runner, runner)}: {how}"
