"""The ranking of a sweep's settings (``rank``), on validation only: the set
of best settings by the all-pairs tests of ``engine.study.stats``, each other
setting's difference from the leader with its simultaneous interval, and the
words that state them (the statistic, the test, the best line). Test metrics
are never used to choose. Its rows are ``engine.study.collect.summarise``'s.
"""

from __future__ import annotations

import math

import numpy as np

from engine.study import claims, overlap, stats
from engine.study.numbers import decimals, significant
from engine.study.stats import ALPHA, POWER, TAIL


def statistic_text(select: str, splits: bool) -> str:
    """What the ranking compares, and by which test."""
    what = ("each run's lowest validation loss (the minimum of its epochs: optimistic)" if select == "best" else
            f"the mean validation loss of each run's last {TAIL} epochs (of all epochs when fewer)")
    unit = ("the split: a setting's statistic on a split is the mean over its seeds there, settings are paired by "
            "split and compared by the corrected resampled t (Nadeau and Bengio 2003), whose factor r assumes "
            f"that {overlap.SHARE:.0%} of the setting x split interaction comes from the training images two "
            "splits share (docs/overlap.md)" if splits else
            "the seed: settings are paired by seed (the sweep gives each the same seeds), by a paired t, or "
            "Welch's t where they share fewer than 2; all seeds share one validation set")
    return (f"{what}, averaged over a setting's runs. A run that diverged counts as the sweep's worst finished "
            f"run, so it ranks last at its seed (intention to treat); a run that failed otherwise is missing, "
            f"never ranked. The unit of the tests is {unit}. Every setting against every other, Holm-adjusted "
            f"over the pairs of this sweep: when all its settings are equal, and the test's model holds, the "
            f"chance of calling any of them worse is at most {ALPHA}. Intervals are simultaneous 95 % intervals "
            f"(Bonferroni over the pairs), so they hold for a leader picked from the data. detectable = the "
            f"smallest true difference a comparison finds with {POWER * 100:g} % power at its spread (two-sided, "
            f"at the Bonferroni level {ALPHA} / pairs, Holm's first step)")


def seeds_text(row: dict) -> str:
    runs = sum(map(len, row.get("statistic_by_run", {}).values())) or len(row["statistic_by_unit"])
    splits = len(row["statistic_by_unit"]) if set(row.get("statistic_by_run", {})) - {0} else 0
    return (f"{runs} run{'s' if runs != 1 else ''}" + (f" on {splits} split{'s' if splits != 1 else ''}" if splits
                                                       else "")
            + (f"; {row['flags']}" if row["flags"] else ""))


def method_text(paired: bool, units: int, ratio: float, splits: bool) -> str:
    """The test a comparison used, in the report's words."""
    if not splits:
        return f"paired t over {units} shared seeds" if paired else "Welch t"
    if not paired:
        return f"Welch t, corrected for overlapping splits (r = {ratio:.2g})"
    return f"corrected resampled t over {units} shared splits (r = {ratio:.2g})"


def best_line(ready: list[dict], tests: stats.Family, leader: int, members: list[int]) -> str:
    """The ranking's first line: one best setting only when the tests single it out."""
    top = ready[leader]
    places = decimals(top.get("statistic_std"), 4, 4)
    lowest = f"{top['setting']} (ranking statistic {top['statistic']:.{places}f}, over {seeds_text(top)})"
    if len(ready) == 1:
        return f"Best on validation: **{top['setting']}**, the only ranked setting: {lowest[len(top['setting']) + 1:]}."
    if int(tests.tested_pairs) == 0:
        return (f"Best on validation: cannot tell (no two settings have 2 runs each: no setting can be shown "
                f"worse); lowest statistic: {lowest}.")
    if len(members) == 1:
        return (f"Best on validation: **{ready[members[0]]['setting']}**, significantly better than every other "
                f"setting; {lowest}.")
    names = ", ".join(ready[i]["setting"] for i in members)
    return (f"Best on validation: cannot tell which of {len(members)} settings ({names}): none of them is "
            f"significantly worse than another (the set of best settings); lowest statistic: {lowest}.")


def rounded_to(value: float, half: float) -> str:
    """``value`` with a sign, to the decimals its interval's half width carries."""
    return f"{value:+.{decimals(half, 4, 4, 1)}f}"


def rank(rows: list[dict], ratio: float = 0.0, *, splits: bool | None = None, select: str = "last") -> dict:
    """The set of best settings by the all-pairs tests, and each other
    setting's evidence. ``splits``: the units are splits (split replicates,
    compared by the corrected resampled t with factor ``ratio``; default:
    ``ratio`` > 0), else seeds on one validation set."""
    splits = ratio > 0 if splits is None else splits
    ready = [r for r in rows if r["statistic_by_unit"]]
    unranked = [r for r in rows if not r["statistic_by_unit"]]
    lines = []
    if not ready:
        lines = ["No setting has a finished run yet."]
        lines += [f"- {r['setting']}: {r['flags']}: not ranked." for r in unranked]
        return {"best": None, "best_set": [], "leader": None, "statistic": statistic_text(select, splits),
                "comparisons": [], "detectable": None, "text": "\n".join(lines)}
    tests = stats.family(claims.unit_matrix(ready), ratio=ratio)
    means = [r["statistic"] for r in ready]
    leader = min(range(len(ready)), key=lambda i: means[i])
    members = [i for i in range(len(ready)) if tests.best_set[i]] or [leader]
    pairs = max(int(tests.tested_pairs), 1)
    comparisons = []
    for j in sorted((j for j in range(len(ready)) if j != leader), key=lambda j: means[j]):
        row = ready[j]
        entry = {"setting": row["setting"], "flags": row["flags"], "difference": None, "interval": None,
                 "p": None, "p_holm": None, "method": None, "detectable": None}
        if math.isnan(tests.p[leader, j]):
            entry["verdict"] = "no noise verdict possible (fewer than 2 finished runs)"
        else:
            difference = float(tests.difference[leader, j])
            se, df = float(tests.se[leader, j]), float(tests.df[leader, j])
            # Simultaneous over the family (Bonferroni): valid whichever setting the data made the leader.
            _, half = stats.t_test(np.asarray(difference), np.asarray(se), np.asarray(df), level=ALPHA / pairs)
            half = float(half)
            beaten_by = [ready[i]["setting"] for i in range(len(ready)) if tests.beats[i, j]]
            entry.update(difference=difference, interval=[difference - half, difference + half],
                         p=float(tests.p[leader, j]), p_holm=float(tests.p_holm[leader, j]),
                         method=method_text(bool(tests.paired[leader, j]), int(df) + 1, ratio, splits),
                         detectable=stats.detectable(se, df, ALPHA / pairs),
                         verdict=f"worse (than {', '.join(beaten_by)})" if beaten_by else
                         "in the set of best settings (no setting significantly better)")
        comparisons.append(entry)
    lines.append(best_line(ready, tests, leader, members))
    for c in comparisons:
        note = f" [{c['flags']}]" if c["flags"] else ""
        if c["interval"] is None:
            lines.append(f"- {c['setting']}: {c['verdict']}.{note}")
        else:
            half = (c["interval"][1] - c["interval"][0]) / 2
            places = decimals(half, 4, 4, 1)
            lines.append(f"- {c['setting']}: val loss {rounded_to(c['difference'], half)} against "
                         f"{ready[leader]['setting']} (simultaneous 95 % interval {c['interval'][0]:+.{places}f} "
                         f"to {c['interval'][1]:+.{places}f}; {c['method']}; Holm p = {c['p_holm']:.2g} over "
                         f"{pairs} pairs; detectable: {significant(c['detectable'], 2)}): {c['verdict']}.{note}")
    lines += [f"- {r['setting']}: {r['flags']}: not ranked (no finished run)." for r in unranked]
    detectable = [c["detectable"] for c in comparisons if c["detectable"] is not None]
    best_set = [ready[i]["setting"] for i in members]
    return {"best": best_set[0] if len(best_set) == 1 and (len(ready) == 1 or tests.tested_pairs) else None,
            "best_set": best_set, "leader": ready[leader]["setting"], "comparisons": comparisons,
            "detectable": [min(detectable), max(detectable)] if detectable else None,
            "text": "\n".join(lines), "statistic": statistic_text(select, splits),
            "not_ranked": [{"setting": r["setting"], "flags": r["flags"]} for r in unranked]}


def answer(ranking: dict, learned: dict | None = None) -> str:
    """The report's answer in plain words, from ``rank``'s all-pairs tests
    (the statistic and the test named): the one best setting, the set of
    best settings and the ones significantly worse, or that no setting is
    distinguishable, with the difference the design could have detected."""
    comparisons = ranking["comparisons"]
    test = f"two-sided pairwise t-tests on the val loss, Holm-adjusted, at {ALPHA * 100:g} %"
    if not ranking["leader"]:
        answer_text = "no setting has a finished run yet."
    elif not comparisons:
        answer_text = f"only {ranking['leader']} has finished runs: nothing to compare it with."
    elif all(c["interval"] is None for c in comparisons):
        answer_text = (f"cannot tell: one run per setting, so no difference can be told from noise "
                       f"(`--repeats 5` makes the comparisons possible); the lowest val loss, {ranking['leader']}, "
                       f"is not a test.")
    elif ranking["best"]:
        answer_text = (f"**{ranking['best']}** is best: every other setting has a significantly higher val loss "
                       f"({test}).")
    elif any(c["verdict"].startswith("worse") for c in comparisons):
        worse = [c["setting"] for c in comparisons if c["verdict"].startswith("worse")]
        answer_text = (f"the set of best settings is **{', '.join(ranking['best_set'])}** (none significantly "
                       f"worse than another); significantly worse: {', '.join(worse)} ({test}).")
    else:
        low, high = ranking["detectable"]
        span = f"{low:.2g}" if f"{low:.2g}" == f"{high:.2g}" else f"{low:.2g} to {high:.2g}"
        answer_text = (f"no setting distinguishable: none has a significantly higher val loss than another "
                       f"({test}); the design detects, with {POWER * 100:g} % power, only val-loss differences "
                       f"of about {span}.")
    answer_text = answer_text[0].upper() + answer_text[1:] if not answer_text.startswith("**") else answer_text
    if learned and learned.get("no_setting_learned"):  # said first: it qualifies every comparison
        answer_text = f"{learned['text']} {answer_text}"
    return answer_text
