"""A sweep's plan sized before it runs: the images its trials see, its wall
time from the one estimator (``training.run_seconds``, with rates measured
on this machine when there are any), its disk, and what its replicates can
detect: what ``engine compare --dry-run`` shows and the dashboard counts.

Imports no TensorFlow (the training names it uses, ``pace``, ``numerics``'
rules, ``disk`` and ``schedule``, need none): a dry run answers in a second.
"""

from __future__ import annotations

from dataclasses import replace

from engine import training
from engine.config import SweepConfig
from engine.data.manifest import check_batch_size, load_manifest
from engine.study import replicates, stats
from engine.study.plan import Trial, select


def checked_counts(sweep: SweepConfig, manifest: dict, built: bool) -> dict:
    """The records' images per split and channels (``built``: made by this
    command), every batch size checked against their train split first
    (``check_batch_size``: the one rule; split replicates check their own
    train sizes, ``replicates.prepare``)."""
    if sweep.splits < 2:
        for batch in sweep.batch_sizes:
            check_batch_size(batch, manifest, split="train")
    counts = {s: manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val", "test")}
    return counts | {"channels": manifest["channels"], "built": built}


def split_counts(sweep: SweepConfig) -> dict[str, int]:
    """Images per split of the sweep's records (and their channels; for the
    embedded set before it is built, its 500/100/100 in 1 channel). Every
    batch size is checked against the train split here, before any trial
    trains (``check_batch_size``: the one rule)."""
    records = sweep.base.records
    built = False
    if records is None:
        from engine.data.embedded import embedded_records

        records = embedded_records(sweep.base.model.image_size, sweep.base.subset)
        if records is None:
            train, val, test = sweep.base.subset or (500, 100, 100)
            return replicates.expected_counts(sweep, {"train": train, "val": val, "test": test, "channels": 1})
        built = True
    manifest = load_manifest(records)
    counts = checked_counts(sweep, manifest, built)
    if sweep.splits > 1:
        # The drawn splits' own sizes; one that cannot be drawn is one line
        # here, in --dry-run too, before anything is written or trained.
        members = replicates.draw(sweep, manifest)
        return replicates.drawn_counts([(len(m.train), len(m.val)) for m in members], counts)
    return counts


def image_counts(sweep: SweepConfig, splits: dict | None) -> dict:
    """Images per split a begun sweep's trials train, validate and test on
    (with split replicates, the mean of the ``splits`` sweep.json stores:
    not drawn again) and the records' channels. Every batch size is checked
    against the train split here (``check_batch_size``: the one rule;
    ``replicates.prepare`` checks each split's own)."""
    counts = checked_counts(sweep, load_manifest(sweep.base.records), built=True)
    if splits:
        return replicates.drawn_counts([(m["train"], m["val"]) for m in splits["members"]], counts)
    return counts


# Starting the sweep's process(es): Python and TensorFlow imported, the
# sweep's choices made (~15 s measured on the 2-core AVX2 CPU).
START_UP_SECONDS = 15.0


def step_key(cfg) -> tuple:
    """What tells a trial's compiled step apart from the other trials' of a
    sweep: the parts of training's graph key that trials of one sweep vary
    (the optimizer and ``training.schedule_key``; the rest of the key is the
    sweep's, alike for all). Within a sweep the steps an epoch follow from
    the batch size, which stands for them here."""
    return (cfg.optimizer, training.schedule_key(cfg, cfg.batch_size))


def estimate_seconds(sweep: SweepConfig, trial_list: list[Trial], counts: dict[str, int],
                     processes: int = 1) -> tuple[float, str]:
    """Wall time of ``trial_list`` on this machine from the one estimator
    (``training.run_seconds``: rates measured here when there are any), with
    the basis of its rates: over ``processes`` trial processes (``--parallel``,
    trials dealt round robin as the shards are), the slowest one's time. Each
    process traces and compiles a step once per ``step_key`` (the batch
    dimension is left unknown, so other batch sizes reuse it)."""
    channels = counts.get("channels", 1)
    basis, slowest = "", 0.0
    for lane in range(processes):
        seconds, compiled = 0.0, set()
        for trial in trial_list[lane::processes]:
            cfg = trial.config
            precision, xla = training.likely_numerics(cfg)
            shape = training.PaceShape(cfg.model.name, cfg.model.image_size, channels, cfg.batch_size, precision,
                                       xla, processes=processes)
            pace = training.estimate_pace(shape)
            basis = basis or pace.basis
            seconds += training.run_seconds(shape, epochs=cfg.epochs, train_images=counts["train"],
                                            val_images=counts["val"], test_images=counts.get("test", 0),
                                            compile_first=step_key(cfg) not in compiled, pace=pace)
            compiled.add(step_key(cfg))
        slowest = max(slowest, seconds)
    if sweep.base.records is None and not counts.get("built"):
        slowest += 30.0  # generating the embedded set and building its records, once per machine
    return START_UP_SECONDS + slowest, basis


def plan_summary(sweep: SweepConfig, everything: list[Trial], counts: dict[str, int], processes: int = 1,
                 why: str = "one process") -> dict:
    """What ``--dry-run`` shows of the plan ``everything`` (``plan.trials``):
    the trials (with their index in the whole sweep, for sizing a job array),
    the trial processes that will run them (``processes``, and ``why``:
    ``launch.parallel_count``) and an estimated time. ``counts``:
    ``split_counts(sweep)``."""
    shown = select(everything, replace(sweep, trial="") if sweep.trial == "auto" else sweep)
    seconds, basis = estimate_seconds(sweep, shown, counts, processes)
    return {"count": len(everything), "seconds": round(seconds), "basis": basis, "processes": processes,
            "processes_why": why, "disk": disk_summary(everything, processes),
            "repeats": repeats_summary(sweep, counts),
            "splits": splits_summary(sweep, counts),
            "trials": [{"index": everything.index(t), "name": t.name, "setting": t.setting, "lr": t.config.lr,
                        "batch_size": t.config.batch_size, "epochs": t.config.epochs, "split": t.split,
                        "seed": t.config.seed} for t in shown]}


def splits_summary(sweep: SweepConfig, counts: dict) -> dict:
    """What --dry-run says of the splits every setting trains on."""
    if sweep.splits < 2:
        return {"count": 1, "text": "the records' own train/val split (--splits 1)"}
    how = {"kfold": f"{sweep.splits}-fold over the train+val pool",
           "holdout": f"{sweep.splits} repeated hold-outs from the train+val pool"}[sweep.split_mode]
    return {"count": sweep.splits, "mode": sweep.split_mode, "train": counts["train"], "val": counts["val"],
            "text": f"{how}, about {counts['train']} train / {counts['val']} val images each, by patient, "
                    f"stratified by class (split seed {sweep.split_seed}); written once to DIR/splits/"}


def repeats_summary(sweep: SweepConfig, counts: dict | None = None) -> dict:
    """Whether ``--repeats`` (or ``--splits``) allows any comparative verdict (a
    comparison needs 2 seeds per setting, or 2 splits), and the smallest
    difference each comparison of the report's all-pairs family then detects
    with 80 % power."""
    settings = len(sweep.lrs) * len(sweep.batch_sizes) * len(sweep.optimizers)
    pairs = settings * (settings - 1) // 2
    if settings < 2:
        return {"comparative": False, "detectable_sds": None, "text": "one setting: nothing to compare"}
    if sweep.splits > 1:
        # Compared across splits by the corrected resampled t: the per-split
        # differences' variance counts 1/K + r times (engine.study.overlap).
        from engine.study import overlap

        counts = counts or {}
        train, val = counts.get("train", 1), counts.get("val", 1)
        pool = counts.get("pool") or train + val
        ratio = overlap.correction_ratio(sweep.split_mode, sweep.splits, train, val, pool)
        sds = stats.detectable_in_sds(sweep.splits, pairs, ratio=ratio)
        warning = overlap.validated(sweep.split_mode, sweep.splits, train, val, pool)
        if sweep.splits >= 5 and ratio >= 0.5:
            bound = f"; more splits narrow it little (r = {ratio:.2g} bounds it): more images would"
        else:
            more = max(5, sweep.splits + 2)
            wider = overlap.correction_ratio(sweep.split_mode, more, train, val, pool)
            bound = f"; {more} splits would detect {stats.detectable_in_sds(more, pairs, ratio=wider):.1f}"
        return {"comparative": True, "detectable_sds": round(sds, 1), "ratio": ratio, "warning": warning,
                "text": f"{sweep.splits} splits x {sweep.repeats} seed{'s' if sweep.repeats != 1 else ''}: each of "
                        f"the {pairs} comparisons between settings (corrected resampled t over the splits, r = "
                        f"{ratio:.2g}) detects with {stats.POWER * 100:g} % power only differences of at least "
                        f"{sds:.1f} SDs of a per-split difference{bound}" + (f"; warning: {warning}" if warning
                                                                             else "")}
    if sweep.repeats < 2:
        return {"comparative": False, "detectable_sds": None,
                "text": f"one run per setting (--repeats {sweep.repeats}): no comparative verdict is possible, so "
                        f"the ranking names no best setting and every claim that compares settings says cannot "
                        f"tell; --repeats 3 trains 3 splits of the pool per setting and makes comparisons possible"}
    sds = stats.detectable_in_sds(sweep.repeats, pairs)
    return {"comparative": True, "detectable_sds": round(sds, 1),
            "text": f"{sweep.repeats} seeds on the records' own split (--splits 1): each of the {pairs} comparisons "
                    f"detects with {stats.POWER * 100:g} % power differences of at least {sds:.1f} SDs of a per-seed "
                    f"difference, on this validation set only (every seed validates on the same images)"}


def disk_summary(plan: list[Trial], processes: int = 1) -> dict:
    """The disk a sweep's trials take: kept once finished, and what the
    checkpoints of the running ones add."""
    if not plan:
        return {"total_mb": 0.0, "trial_mb": 0.0, "checkpoint_mb": 0.0, "text": "none"}
    per_trial = training.run_disk_mb(plan[0].config)
    total = per_trial["kept"] * len(plan)
    running = per_trial["checkpoint"] * min(processes, len(plan))
    what = "models, logs and checkpoint" if plan[0].config.keep_checkpoints else "models and logs"
    return {"total_mb": round(total), "trial_mb": round(per_trial["kept"]), "checkpoint_mb": round(running),
            "text": f"about {size_text(total)} ({len(plan)} trials x {size_text(per_trial['kept'])}: {what}), "
                    f"up to {size_text(running)} more while trials run (their checkpoints)"}


def size_text(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def total_steps(plan: list[Trial], train_images: int) -> int:
    """Training steps of the trials, for the dashboard's overall bar."""
    return sum(t.config.epochs * (train_images // t.config.batch_size) for t in plan)


