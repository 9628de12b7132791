"""A sweep's split replicates (``engine compare --splits K``): where each
split's records live, how they are made once for the whole sweep, and what
``sweep.json`` stores of them.

With ``--splits 1`` a sweep trains on its records' own train/val split and
nothing here runs. With K >= 2 the membership of every split is drawn from
the pool of the records' train and val images (``engine.data.resample``:
patient-grouped, class-stratified, seeded) and each split is written once as
a records folder of its own, ``DIR/splits/split<k>``, that every trial of
that split trains on (the test split stays the records' own). ``sweep.json``
stores each split's sizes and the sha256 of its member list (the list itself
is ``members.json`` in the split's folder), so a runner that starts later,
a resumed sweep or a job array's task trains on exactly the same images, and
records that changed under a sweep are refused, not silently resampled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from engine.config import SweepConfig
from engine.data import resample
from engine.data.manifest import check_batch_size, load_manifest
from engine.errors import UserError
from engine.study import plan

def folder(out: Path, index: int) -> Path:
    """The records folder of split ``index`` (1..K) of the sweep in ``out``."""
    return plan.split_records(out, index)


def draw(sweep: SweepConfig, manifest: dict | None = None) -> list[resample.Membership]:
    """The sweep's K memberships (none with ``--splits 1``); a split that
    cannot be drawn is a one-line UserError."""
    if sweep.splits < 2:
        return []
    manifest = manifest or load_manifest(sweep.base.records)
    return resample.draw(manifest, sweep.splits, sweep.split_mode, sweep.split_sizes, sweep.split_seed)


def entry(sweep: SweepConfig, members: list[resample.Membership], pool: int | None = None) -> dict | None:
    """What sweep.json stores of the splits (None with ``--splits 1``);
    ``pool``: the train+val images they were drawn from."""
    if not members:
        return None
    return {"count": sweep.splits, "mode": sweep.split_mode,
            "sizes": list(sweep.split_sizes) if sweep.split_sizes else None, "seed": sweep.split_seed,
            "ratio": resample.val_train_ratio(members), "pool": pool,
            "members": [m.to_json() | {"folder": f"{plan.SPLITS_FOLDER}/split{m.index}",
                                       "members_file": f"{plan.SPLITS_FOLDER}/split{m.index}/members.json"}
                        for m in members]}


def prepare(sweep: SweepConfig, stored: dict | None) -> dict | None:
    """The sweep.json entry of the sweep's splits (None with ``--splits 1``).

    Drawn once, by the runner that begins the sweep: it checks every batch
    size against every split's train images and writes each split's records
    folder. A later runner (``stored``: the sweep.json it adopts) whose
    records are the ones the splits were drawn from (``records_digest``)
    keeps the stored entry without drawing again, and only writes a split
    folder that is missing; records that changed since are refused."""
    if sweep.splits < 2:
        return None
    manifest = load_manifest(sweep.base.records)
    before = (stored or {}).get("splits")
    if before and before.get("records_sha256") == records_digest(manifest):
        # (resample.write renames a split's folder in whole: its members file means it is complete)
        missing = [m for m in before["members"] if not (folder(sweep.base.out, m["index"]) /
                                                        resample.MEMBERS).is_file()]
        if not missing:
            return before
    members = draw(sweep, manifest)
    if before:
        then = [m.get("sha256") for m in before.get("members", [])]
        if then != [m.digest for m in members]:
            raise UserError(f"the records {sweep.base.records} changed since the sweep in {sweep.base.out} began: "
                            f"its splits drawn now differ from sweep.json's; use another --out, or --force to "
                            f"start over")
    for m in members:  # the one rule, against each split's own train images
        check_batch_size(max(sweep.batch_sizes), {"splits": {"train": {"count": len(m.train)}}})
    for m in members:
        resample.write(sweep.base.records, manifest, m, folder(sweep.base.out, m.index))
    return entry(sweep, members, pool_size(manifest)) | {"records_sha256": records_digest(manifest)}


def records_digest(manifest: dict) -> str:
    """sha256 of the records' examples (ids, splits, classes, groups): the
    input every split is drawn from, with the sweep's split options."""
    text = json.dumps(manifest.get("examples", []), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def pool_size(manifest: dict) -> int:
    """The train+val images splits are drawn from."""
    return sum(manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val"))


def design(splits: dict) -> tuple[str, int, int, int, int]:
    """(mode, K, n_train, n_val, pool) of stored splits: their mean sizes,
    and the pool (a sweep.json without it: a hold-out of the whole pool)."""
    train = round(float(np.mean([m["train"] for m in splits["members"]])))
    val = round(float(np.mean([m["val"] for m in splits["members"]])))
    return splits["mode"], int(splits["count"]), train, val, int(splits.get("pool") or train + val)


def correction(splits: dict | None) -> float:
    """The factor r of the corrected resampled t for these splits
    (``overlap.correction_ratio``: checked against a model of overlapping
    splits it does not assume); 0 without split replicates."""
    if not splits:
        return 0.0
    from engine.study import overlap

    return overlap.correction_ratio(*design(splits))


def design_warning(splits: dict | None) -> str | None:
    """One line when the splits lie outside the designs the correction was checked on."""
    if not splits:
        return None
    from engine.study import overlap

    return overlap.validated(*design(splits))


def drawn_counts(sizes: list[tuple[int, int]], counts: dict) -> dict:
    """``counts`` with the train and val images of the drawn splits (``sizes``:
    each split's train and val counts; their mean, as whole patients move,
    so they differ by a few) and the pool they were drawn from."""
    if not sizes:
        return counts
    return counts | {"train": round(np.mean([train for train, _ in sizes])),
                     "val": round(np.mean([val for _, val in sizes])), "pool": counts["train"] + counts["val"]}


def expected_counts(sweep: SweepConfig, counts: dict) -> dict:
    """Images per split a trial trains and validates on, before the records
    exist (the embedded set not built yet), from their expected ``counts``:
    the records' own with ``--splits 1`` or a hold-out of their size,
    ``--split-sizes``, or the pool less one fold for k-fold."""
    if sweep.splits < 2:
        return counts
    pool = counts["train"] + counts["val"]
    if sweep.split_mode == "kfold":
        val = pool // sweep.splits
        return counts | {"train": pool - val, "val": val, "pool": pool}
    if sweep.split_sizes:
        return counts | {"train": sweep.split_sizes[0], "val": sweep.split_sizes[1], "pool": pool}
    return counts | {"pool": pool}


def describe(splits: dict | None, seeds: int, test_images: int | None = None) -> str:
    """The report's scope line: which variation the comparisons describe, and what the test metrics do."""
    test = (f" The test metrics describe these {test_images} test images." if test_images else
            " The test metrics describe the records' test images only.")
    if not splits:
        return ("Scope: the comparisons describe this one train/val split only (`--splits 1`): seeds vary, the "
                "images do not, so a setting that happens to suit these validation images wins at every seed; "
                "the verdicts hold on this validation set, and claims about the task need split replicates "
                "(`--repeats N` without `--splits`)." + test)
    mode, count, train, val, pool = design(splits)
    overlap_share = train / pool if mode == "holdout" else (count - 2) / (count - 1)
    kind = {"kfold": f"{count}-fold cross-validation over the {pool}-image pool",
            "holdout": f"{count} hold-outs drawn from the {pool}-image train+val pool"}[mode]
    shared = ("nearly independent samples of the task" if overlap_share < 0.25 else
              f"two training sets share about {overlap_share:.0%} of their images, so the splits are not "
              f"independent samples of the task: the corrected t allows for it")
    return (f"Scope: the comparisons describe the variation across {count} splits of this pool and {seeds} "
            f"seed{'s' if seeds != 1 else ''} per split ({kind}; about {train} train / {val} val images each, by "
            f"patient and stratified by class; the test split is never in any; {shared})." + test)


# --- in the report ------------------------------------------------------------

def units(by_run: dict[int, dict[int, float]]) -> dict[int, float]:
    """A setting's statistics per unit of the tests, from ``split -> seed ->
    statistic``: per seed on the records' own split (split 0), per split
    (the mean of its seeds) with split replicates."""
    if set(by_run) <= {0}:
        return dict(by_run.get(0, {}))
    return {split: float(np.mean(list(seeds.values()))) for split, seeds in sorted(by_run.items()) if seeds}


def run_array(row: dict) -> np.ndarray:
    """A setting's statistics as (splits, seeds), NaN for a missing run (in
    split and seed order)."""
    runs = row.get("statistic_by_run", {})
    splits = sorted(runs)
    seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
    return np.array([[runs[k].get(s, np.nan) for s in seeds] for k in splits], float).reshape(len(splits),
                                                                                              len(seeds))


# Below this many splits the split/seed shares are not printed: their
# intervals span nearly 0-100 %.
VARIANCE_SPLITS = 5


def variance_lines(rows: list[dict]) -> list[str]:
    """Per setting, how much of its runs' spread comes from the splits and
    how much from the seeds (``stats.variance_components``), with a 95 %
    interval for the splits' share (the intraclass correlation's exact
    F-based interval of a balanced one-way layout, Searle 1971); nothing
    below ``VARIANCE_SPLITS`` splits."""
    from scipy import stats as scipy_stats

    from engine.study import stats

    lines = []
    for row in rows:
        runs = run_array(row)
        complete = runs[~np.isnan(runs).any(axis=1)] if runs.size else runs
        if len(complete) < VARIANCE_SPLITS or complete.shape[1] < 2:
            splits, seeds = len(complete), complete.shape[1] if complete.size else 0
            lines.append(f"- {row['setting']}: not estimated (needs 2 or more seeds in each of at least "
                         f"{VARIANCE_SPLITS} splits; here {splits} complete split{'s' if splits != 1 else ''} x "
                         f"{seeds} seed{'s' if seeds != 1 else ''})")
            continue
        split_var, seed_var = stats.variance_components(complete)
        a, n = complete.shape
        within = float(np.sum((complete - complete.mean(axis=1, keepdims=True)) ** 2)) / (a * (n - 1))
        between = n * float(np.var(complete.mean(axis=1), ddof=1))
        if within == 0:
            lines.append(f"- {row['setting']}: SD between splits {np.sqrt(split_var):.3g}, no seed spread")
            continue
        f = between / within
        bounds = [(f / scipy_stats.f.ppf(q, a - 1, a * (n - 1)) - 1) for q in (0.975, 0.025)]
        low, high = (max(0.0, min(1.0, b / (b + n))) for b in bounds)
        total = split_var + seed_var
        share = split_var / total if total > 0 else 0.0
        lines.append(f"- {row['setting']}: SD between splits {np.sqrt(split_var):.3g}, between seeds of one split "
                     f"{np.sqrt(seed_var):.3g}; splits {share:.0%} of the variance (95 % interval {low:.0%} to "
                     f"{high:.0%})")
    return lines


def comparisons(rows: list[dict], ranking: dict) -> list[dict]:
    """What ``plots.plot_splits`` draws: every other setting against the
    lowest-statistic one, per split (the difference of the seed means) and
    per seed, with the ranking's mean, interval and verdict."""
    leader = next((r for r in rows if r["setting"] == ranking.get("leader")), None)
    if leader is None:
        return []
    out = []
    for entry in ranking["comparisons"]:
        row = next(r for r in rows if r["setting"] == entry["setting"])
        splits = sorted(set(leader["statistic_by_run"]) | set(row["statistic_by_run"]))
        by_split, by_seed = [], []
        for k in splits:
            mine, theirs = leader["statistic_by_run"].get(k, {}), row["statistic_by_run"].get(k, {})
            by_split.append(row["statistic_by_unit"].get(k, np.nan) - leader["statistic_by_unit"].get(k, np.nan))
            by_seed.append([theirs[s] - mine[s] for s in sorted(set(mine) & set(theirs))])
        verdict = entry.get("verdict", "")
        out.append({"label": f"{row['setting']} − {leader['setting']}", "by_split": by_split, "by_seed": by_seed,
                    "difference": entry["difference"] if entry["difference"] is not None else np.nan,
                    "interval": tuple(entry["interval"]) if entry["interval"] else None,
                    "verdict": "worse" if verdict.startswith("worse") else
                    "cannot tell" if verdict.startswith("in the set") else verdict})
    return out
