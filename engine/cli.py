"""The ``engine`` command line: parses options into configs and calls the modules."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from engine.config import RecordsConfig, parse_floats, parse_ints
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.config import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adam learning rate x batch size studies of InceptionV3 on chest X-rays.")
out_console = Console()


def command_line() -> str:
    return "engine " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def print_summary(manifest: dict, folder: Path) -> None:
    """Counts per split and class, and what needs the user's attention."""
    classes = sorted(manifest["label_map"], key=manifest["label_map"].get)
    table = Table(title=f"{folder}  ({manifest['image_size'][0]} px, {manifest['channels']} channel"
                        f"{'s' if manifest['channels'] > 1 else ''}, {manifest['encoding']})")
    table.add_column("split")
    for name in classes:
        table.add_column(f"{name} ({manifest['label_map'][name]})", justify="right")
    table.add_column("total", justify="right")
    table.add_column("shards", justify="right")
    for split, info in manifest["splits"].items():
        table.add_row(split, *(str(info["per_class"][c]) for c in classes), str(info["count"]),
                      str(len(info["shards"])))
    out_console.print(table)
    for note in manifest["notes"]:
        out_console.print(f"note: {note}")
    if manifest["rejects"]:
        out_console.print(f"skipped {manifest['rejects']} unreadable files, reasons in "
                          f"{folder / 'rejects.csv'}")
    out_console.print(f"{manifest['images_per_second']:,.0f} images/s in {manifest['seconds']:.1f} s")


@app.command()
def synthetic(
    out: Annotated[Path, typer.Argument(help="Folder to create: OUT/{train,val,test}/{covid,normal}/*.png")],
    image_size: Annotated[int, typer.Option(help="Side of the square images.")] = 299,
    counts: Annotated[str, typer.Option(help="Images per split: train,val,test.")] = "500,100,100",
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: all cores).")] = None,
) -> None:
    """Generate synthetic chest X-rays (covid with ground-glass opacities, normal without)."""
    from engine import synthetic as synth
    from engine.progress import progress

    numbers = parse_ints(counts, "--counts")
    if len(numbers) != 3 or min(numbers) < 0:
        raise UserError("--counts needs three counts train,val,test (e.g. 500,100,100)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose another OUT")
    with progress(sum(numbers), "Generating", "images") as advance:
        summary = synth.generate(out, image_size=image_size, counts=dict(zip(("train", "val", "test"), numbers)),
                                 seed=seed, workers=workers, on_progress=advance)
    out_console.print(f"wrote {sum(numbers)} images to {out} "
                      f"({summary.get('images_per_second', 0):,.0f} images/s)")


@app.command("build-records")
def build_records(
    src: Annotated[Optional[Path], typer.Argument(
        help="Image folder. Omit both SRC and OUT to build the embedded synthetic set.")] = None,
    out: Annotated[Optional[Path], typer.Argument(help="Records folder to create.")] = None,
    recipe: Annotated[Optional[str], typer.Option(
        help="Known source layout: a name from `engine recipes` or a TOML path.")] = None,
    layout: Annotated[str, typer.Option(help="auto | split-class | class | list.")] = "auto",
    list_file: Annotated[Optional[list[Path]], typer.Option(
        "--list", help="List file 'patientId filename label [source]' (repeatable).")] = None,
    classes: Annotated[Optional[str], typer.Option(
        help='Select, rename, merge classes: "COVID=covid,Normal=normal".')] = None,
    split: Annotated[str, typer.Option(help="train,val,test fractions for splits made here.")] = "0.8,0.1,0.1",
    split_by: Annotated[str, typer.Option(help="patient | source (leave --test-source out).")] = "patient",
    test_source: Annotated[Optional[str], typer.Option(help="Source held out as test.")] = None,
    resplit: Annotated[bool, typer.Option(help="Pool the folder's splits and split again by patient.")] = False,
    patient_pattern: Annotated[Optional[str], typer.Option(
        help="Regex with (?P<patient>...) searched in file names.")] = None,
    source_pattern: Annotated[Optional[str], typer.Option(
        help="Regex with (?P<source>...) searched in file names.")] = None,
    subset: Annotated[Optional[str], typer.Option(
        help="Stratified seeded subset per split: train,val,test (the paper: 500,100,100).")] = None,
    image_size: Annotated[int, typer.Option(help="Side of the square images written.")] = 299,
    resize: Annotated[str, typer.Option(help="nearest (the paper's) | bilinear | area.")] = "nearest",
    encoding: Annotated[str, typer.Option(help="png | raw | jpeg.")] = "png",
    channels: Annotated[str, typer.Option(help="auto | 1 | 3 (auto: 1 if all grayscale).")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of splits, subset and shard order.")] = 0,
    workers: Annotated[Optional[int], typer.Option(help="Decode processes (default: all cores).")] = None,
    allow_duplicates: Annotated[bool, typer.Option(help="Keep identical files found in two splits.")] = False,
    dedupe: Annotated[bool, typer.Option(help="Drop val/test copies of files already in train.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT (at the end).")] = False,
    name: Annotated[str, typer.Option(help="Dataset name in shard file names.")] = "chestxray",
    shard_mb: Annotated[float, typer.Option(help="Shard size cap in MB.")] = 100.0,
    max_pixels: Annotated[int, typer.Option(help="Reject larger images (bomb guard).")] = 64_000_000,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Image folder -> pre-resized TFRecord shards with a manifest."""
    from engine import records

    if src is None and out is None:
        from engine.embedded import synthetic_records

        folder, built = synthetic_records(image_size=image_size, seed=seed, quiet=quiet, workers=workers)
        if not built:
            out_console.print(f"embedded synthetic set already built: {folder}")
        print_summary(records.load_manifest(folder), folder)
        return
    if src is None or out is None:
        raise UserError("build-records takes SRC and OUT (or neither, for the embedded synthetic set)")
    cfg = RecordsConfig(
        src=src, out=out, recipe=recipe, layout=layout, list_files=tuple(list_file or ()),
        classes=classes, fractions=parse_floats(split, "--split"), split_by=split_by,
        test_source=test_source, resplit=resplit, patient_pattern=patient_pattern,
        source_pattern=source_pattern, subset=parse_ints(subset, "--subset") if subset else None,
        image_size=image_size, resize=resize, encoding=encoding, channels=channels, seed=seed,
        workers=workers, allow_duplicates=allow_duplicates, dedupe=dedupe, overwrite=overwrite,
        name=name, shard_mb=shard_mb, max_pixels=max_pixels, command=command_line())
    manifest = records.build(cfg, quiet=quiet)
    print_summary(manifest, out)


def train_config(records: Optional[Path], out: Optional[Path], **options) -> "TrainConfig":
    """Maps the train options onto the typed config."""
    from engine.config import ModelConfig, PipelineConfig, TrainConfig

    model = ModelConfig(name=options.pop("model"), weights=options.pop("weights"),
                        image_size=options.pop("image_size"), freeze_base=options.pop("freeze_base"),
                        trainable_from=options.pop("trainable_from"), hidden=options.pop("hidden"),
                        dropout=options.pop("dropout"), fused_bn=options.pop("fused_bn"))
    data = PipelineConfig(cache_mb=options.pop("cache_mb"), data_service=options.pop("data_service"))
    return TrainConfig(records=records, out=out, model=model, data=data, **options).validate()


@app.command()
def train(
    records: Annotated[Optional[Path], typer.Argument(
        help="Records folder (omit: the embedded synthetic set).")] = None,
    out: Annotated[Path, typer.Option(help="Run folder (resumed if it holds this run).")] = Path("runs/train"),
    lr: Annotated[float, typer.Option(help="Learning rate (the paper: 1e-2 ... 1e-7).")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Global batch size (the paper: 5, 10, 15).")] = 5,
    epochs: Annotated[int, typer.Option(help="Epochs (the paper: 20).")] = 20,
    optimizer: Annotated[str, typer.Option(help="adam | sgd | nesterov | rmsprop | nadam | adamw.")] = "adam",
    schedule: Annotated[str, typer.Option(help="constant | cosine | step.")] = "constant",
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up epochs.")] = 0.0,
    model: Annotated[str, typer.Option(
        help="InceptionV3 | ResNet50 | EfficientNetV2B0 | MobileNetV3Small | ...")] = "InceptionV3",
    weights: Annotated[str, typer.Option(help="imagenet | none | PATH to backbone weights.")] = "imagenet",
    image_size: Annotated[int, typer.Option(help="Image side (must match the records).")] = 299,
    freeze_base: Annotated[bool, typer.Option(help="Train the head only.")] = False,
    trainable_from: Annotated[Optional[str], typer.Option(help="Freeze backbone layers before this one.")] = None,
    hidden: Annotated[int, typer.Option(help="Units of the head's relu layer.")] = 256,
    dropout: Annotated[float, typer.Option(help="Dropout before the sigmoid.")] = 0.2,
    fused_bn: Annotated[bool, typer.Option(help="BatchNorm on TensorFlow's fused kernel (faster).")] = True,
    augment: Annotated[str, typer.Option(help="paper | none | randaugment | augmix.")] = "paper",
    precision: Annotated[str, typer.Option(help="auto | float32 | mixed_float16 | mixed_bfloat16.")] = "auto",
    xla: Annotated[str, typer.Option(help="auto | on | off.")] = "auto",
    class_weight: Annotated[str, typer.Option(help="none | auto (inverse class frequency).")] = "none",
    positive_class: Annotated[str, typer.Option(help="Class scored by sensitivity/AUC.")] = "covid",
    threshold: Annotated[str, typer.Option(help="Decision threshold, or val-youden.")] = "0.5",
    bn_momentum: Annotated[str, typer.Option(help="auto | keras | a number.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of order, augmentation, initialisation.")] = 0,
    deterministic: Annotated[bool, typer.Option(help="Deterministic kernels too (slower).")] = False,
    cache_mb: Annotated[float, typer.Option(help="Keep decoded splits in memory up to this size.")] = 2048.0,
    data_service: Annotated[Optional[str], typer.Option(help="tf.data service dispatcher grpc://host:port.")] = None,
    force: Annotated[bool, typer.Option(help="Start over if OUT holds another config.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only the final summary.")] = False,
) -> None:
    """Train one model (one trial of the study) and evaluate it with clinical metrics."""
    from engine import train as train_lib

    options = dict(locals())
    for name in ("records", "out", "force", "quiet", "train_lib"):
        options.pop(name)
    cfg = train_config(records, out, **options)
    result = train_lib.train(cfg, quiet=quiet, force=force)
    print_metrics(result, out)


def print_metrics(result: dict, run: Path) -> None:
    """Status, choices, and val/test metrics with intervals."""
    out_console.print(f"{run}: {result['status']} after {result['epochs_done']} epochs "
                      f"(precision {result['precision']['value']}, XLA {result['xla']['value']})")
    for split in ("val", "test"):
        if split not in result:
            continue
        summary = result[split]
        table = Table(title=f"{split} ({summary['n']} images, positive class {summary['positive_class']}, "
                            f"threshold {summary['threshold']:.3g})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("95 % interval", justify="right")
        for name, value in summary["metrics"].items():
            low, high = summary["intervals"][name]
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            table.add_row(name, fmt(value), f"{fmt(low)} - {fmt(high)}")
        out_console.print(table)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder of `engine train`.")],
    records: Annotated[Optional[Path], typer.Argument(help="Records (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="train | val | test.")] = "test",
    threshold: Annotated[Optional[float], typer.Option(help="Default: the run's chosen threshold.")] = None,
) -> None:
    """Metrics of a trained run's best model on a split, with bootstrap intervals."""
    from engine import metrics, pipeline, records as records_lib
    from engine.train import load_run, predict_split

    cfg, data, net = load_run(run)
    folder = records or Path(data["records"])
    manifest = records_lib.load_manifest(folder)
    if manifest["label_map"] != data["label_map"]:
        raise UserError(f"{folder} labels {manifest['label_map']} differ from the run's {data['label_map']}")
    if threshold is None:
        threshold = run_threshold(run)
    positive = data["label_map"][data["positive_class"]]
    ds = pipeline.dataset(folder, split, cfg.batch_size, training=False, manifest=manifest)
    p, y = predict_split(net, ds)
    summary = metrics.summary(p, y, positive, threshold, cfg.bootstrap, cfg.seed, label_map=data["label_map"])
    print_metrics({"status": "evaluated", "epochs_done": "all", "precision": {"value": "-"},
                   "xla": {"value": "-"}, split if split != "train" else "val": summary}, run)


def run_threshold(run: Path) -> float:
    """The decision threshold on P(positive) a run chose (0.5 before it finished)."""
    import json

    saved = run / "metrics.json"
    if saved.is_file():
        threshold = json.loads(saved.read_text()).get("threshold")
        if threshold:
            return float(threshold["value"])
    return 0.5


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder of `engine train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    gradcam: Annotated[Optional[Path], typer.Option(help="Write a Grad-CAM overlay PNG per image here.")] = None,
) -> None:
    """Predicted class and its probability for each image, e.g. `normal 0.996`."""
    import numpy as np

    from engine import images as images_lib
    from engine.train import load_run

    cfg, data, net = load_run(run)
    size, channels = data["image_size"][0], data["channels"]
    names = {v: k for k, v in data["label_map"].items()}
    positive = data["label_map"][data["positive_class"]]
    threshold = run_threshold(run)
    for path in images:
        result = images_lib.process(images_lib.Task(0, str(path), size, data["resize"], "raw", 64_000_000))
        if result.reason:
            raise UserError(f"{path}: {result.reason}")
        array = images_lib.decode(result.data, "raw", (size, size, result.channels))
        if result.channels != channels:
            array = np.repeat(array, 3, axis=2) if channels == 3 else array.mean(axis=2, keepdims=True)
        p = float(net(array[None].astype("float32"), training=False)[0, 0])
        score = p if positive == 1 else 1 - p  # P(positive class)
        label = positive if score >= threshold else 1 - positive
        probability = p if label == 1 else 1 - p
        out_console.print(f"{path}: {names[label]} {probability:.3g}", highlight=False, soft_wrap=True)
        if gradcam:
            from engine.gradcam import heatmap, overlay
            overlay(path, heatmap(net, array, label), gradcam / f"{path.stem}_gradcam.png")


def parse_list(text: Optional[str], kind, what: str):
    if not text:
        return None
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{what} takes a comma-separated list, not {text!r}") from None


@app.command()
def compare(
    records: Annotated[Optional[Path], typer.Argument(help="Records (omit: the embedded synthetic set).")] = None,
    axis: Annotated[str, typer.Option(help="lr | batch | grid | optimizer.")] = "lr",
    preset: Annotated[str, typer.Option(help="paper (the study as published) | quick (minutes on a CPU).")] = "quick",
    out: Annotated[Path, typer.Option(help="Sweep folder (rerun to resume).")] = Path("runs/compare"),
    lrs: Annotated[Optional[str], typer.Option(help="Learning rates, e.g. 1e-2,1e-3.")] = None,
    batch_sizes: Annotated[Optional[str], typer.Option(help="Batch sizes, e.g. 5,10,15.")] = None,
    optimizers: Annotated[Optional[str], typer.Option(help="For --axis optimizer, e.g. adam,sgd.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per trial.")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Runs per setting (seeds seed, seed+1, ...).")] = None,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    image_size: Annotated[Optional[int], typer.Option(help="Image side (must match the records).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Backbone (default InceptionV3).")] = None,
    precision: Annotated[str, typer.Option(help="auto | float32 | mixed_float16 | mixed_bfloat16.")] = "auto",
    xla: Annotated[Optional[str], typer.Option(help="auto | on | off (default: the preset's).")] = None,
    weights: Annotated[Optional[str], typer.Option(help="imagenet | none | PATH.")] = None,
    budget: Annotated[str, typer.Option(help="epochs (the paper) | steps (equal updates per batch size).")] = "epochs",
    lr_scaling: Annotated[str, typer.Option(help="none | linear | sqrt, for the batch axis.")] = "none",
    shard: Annotated[str, typer.Option(help="i/n: run the i-th of n slices of the trials.")] = "0/1",
    config: Annotated[Optional[Path], typer.Option(help="A TOML file with these same fields.")] = None,
    parallel: Annotated[int, typer.Option(help="Trials at once: N processes, one GPU each where there are GPUs.")]
    = 1,
    dry_run: Annotated[bool, typer.Option(help="Print the trials and an estimated time, then stop.")] = False,
    force: Annotated[bool, typer.Option(help="Start over if OUT holds another sweep.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only the final summary.")] = False,
) -> None:
    """Run the paper's learning-rate or batch-size study and report it."""
    from engine import records as records_lib, report, sweep as sweep_lib
    from engine.dashboard import Dashboard

    options = {k: v for k, v in locals().items() if k in (
        "axis", "preset", "lrs", "batch_sizes", "optimizers", "epochs", "repeats", "seed", "image_size", "model",
        "precision", "xla", "weights", "budget", "lr_scaling", "shard")}
    if config:
        import tomllib
        try:
            from_file = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise UserError(f"--config {config}: {err}") from None
        unknown = set(from_file) - set(options)
        if unknown:
            raise UserError(f"--config {config}: unknown fields {', '.join(sorted(unknown))}")
        for key, value in from_file.items():
            options[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    try:
        index, count = (int(v) for v in str(options["shard"]).split("/"))
    except ValueError:
        raise UserError(f"--shard takes i/n, not {options['shard']!r}") from None
    size = options["image_size"] or sweep_lib.PRESETS.get(options["preset"], sweep_lib.PRESETS["quick"]).image_size
    if records is None and not dry_run:
        from engine.embedded import synthetic_records
        records, _ = synthetic_records(image_size=size, quiet=quiet)
    sweep = sweep_lib.resolve(
        options["axis"], options["preset"], records, out, lrs=parse_list(options["lrs"], float, "--lrs"),
        batch_sizes=parse_list(options["batch_sizes"], int, "--batch-sizes"),
        optimizers=parse_list(options["optimizers"], str, "--optimizers"), epochs=options["epochs"],
        repeats=options["repeats"], seed=options["seed"], image_size=size, model=options["model"],
        precision=options["precision"], xla=options["xla"], weights=options["weights"], budget=options["budget"],
        lr_scaling=options["lr_scaling"], shard=(index, count))
    plan = sweep_lib.trials(sweep)
    counts = {"train": 500, "val": 100}
    if records is not None:
        manifest = records_lib.load_manifest(records)
        counts = {s: manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val")}
        too_big = [b for b in sweep.batch_sizes if b > counts["train"]]
        if too_big:
            raise UserError(f"batch size {too_big[0]} is larger than the train split ({counts['train']} images)")
    if dry_run:
        rate = sweep_lib.rough_rate(size, sweep.base.model.name)
        table = Table("trial", "setting", "lr", "batch", "epochs", "seed")
        for t in plan:
            table.add_row(t.name, t.setting, f"{t.config.lr:g}", str(t.config.batch_size), str(t.config.epochs),
                          str(t.config.seed))
        out_console.print(table)
        seconds = sweep_lib.estimate_seconds(plan, counts["train"], counts["val"], rate)
        out_console.print(f"{len(plan)} trials; roughly {seconds / 60:.0f} min at ~{rate:.0f} img/s "
                          f"(a rough figure for this machine; see benchmarks/RESULTS.md)")
        return
    total = sum(t.config.epochs * (counts["train"] // t.config.batch_size) for t in plan)
    if parallel > 1:
        run_parallel(parallel, records, quiet)
    else:
        with Dashboard(total, quiet=quiet) as dashboard:
            sweep_lib.run(sweep, force=force, on_event=dashboard)
    result = report.write(out)
    out_console.print(result["ranking"]["text"].replace("**", ""), highlight=False, soft_wrap=True)
    out_console.print(f"report: {out / 'report.md'}; curves: {out / 'curves.png'}; "
                      f"TensorBoard: tensorboard --logdir {out / 'trials'}", highlight=False, soft_wrap=True)


def run_parallel(count: int, records: Path, quiet: bool) -> None:
    """Runs the sweep as ``count`` shard processes into the same folder.

    Each process gets one GPU (CUDA_VISIBLE_DEVICES) when there are GPUs; their
    plain per-epoch lines are relayed with a ``[i]`` prefix. The report is
    written once all have finished.
    """
    import os
    import subprocess
    import threading

    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    args = [a for a in sys.argv[1:]]
    for flag in ("--parallel", "--shard"):
        while flag in args:
            index = args.index(flag)
            del args[index:index + 2]
    if "compare" in args and records and str(records) not in args:
        args.insert(args.index("compare") + 1, str(records))
    procs = []
    for i in range(count):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "engine.cli", *args, "--shard", f"{i}/{count}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))

    def relay(i, proc):
        for line in proc.stdout:
            if not quiet and not line.startswith(("I0000", "W0000", "E0000", "WARNING: All", "To enable")):
                print(f"[{i}] {line}", end="", flush=True)

    threads = [threading.Thread(target=relay, args=(i, p)) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        raise UserError(f"shard process{'es' if len(failed) > 1 else ''} {', '.join(map(str, failed))} of "
                        f"{count} failed (see their lines above); rerun the same command to resume")


@app.command("lr-find")
def lr_find(
    records: Annotated[Optional[Path], typer.Argument(help="Records (omit: the embedded synthetic set).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for lr_find.json/.png (a sweep folder marks it in its report).")]
    = Path("runs/lr-find"),
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 5,
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option(help="Last learning rate.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Steps of the exponential ramp.")] = 100,
    model: Annotated[str, typer.Option(help="Backbone.")] = "InceptionV3",
    weights: Annotated[str, typer.Option(help="imagenet | none | PATH.")] = "imagenet",
    image_size: Annotated[int, typer.Option(help="Image side (must match the records).")] = 299,
    optimizer: Annotated[str, typer.Option(help="adam | sgd | ...")] = "adam",
    precision: Annotated[str, typer.Option(help="auto | float32 | mixed_float16 | mixed_bfloat16.")] = "auto",
    xla: Annotated[str, typer.Option(help="auto | on | off.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Learning-rate range test: loss against an exponentially growing learning rate, and a suggestion."""
    from engine import lrfind
    from engine.config import ModelConfig, TrainConfig

    cfg = TrainConfig(records=records, out=out, batch_size=batch_size, optimizer=optimizer, precision=precision,
                      xla=xla, seed=seed, model=ModelConfig(name=model, weights=weights, image_size=image_size))
    result = lrfind.run(cfg, out, start=start, end=end, steps=steps, quiet=quiet)
    suggested = "none (too few steps)" if result["suggested"] is None else f"{result['suggested']:.3g}"
    out_console.print(f"{result['steps_run']} steps; suggested learning rate {suggested} ({result['rule']}); "
                      f"plot: {out / 'lr_find.png'}", highlight=False, soft_wrap=True)


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="A sweep folder (several shards' trials are merged).")],
) -> None:
    """Rewrite a sweep's summary, plots and report from what its trials wrote."""
    from engine import report

    if not (folder / "sweep.json").is_file():
        raise UserError(f"{folder} is not a sweep folder (no sweep.json)")
    result = report.write(folder)
    out_console.print(result["ranking"]["text"].replace("**", ""), highlight=False, soft_wrap=True)


@app.command()
def bench(
    records: Annotated[Optional[Path], typer.Argument(help="Records (omit: the embedded synthetic set).")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes, e.g. 5,10,15,32,64.")] = "5,10,15",
    image_size: Annotated[int, typer.Option(help="Image side (must match the records).")] = 299,
    precision: Annotated[str, typer.Option(
        help="Comma-separated: float32, mixed_float16, mixed_bfloat16, auto (all it could pick).")] = "float32,auto",
    xla: Annotated[str, typer.Option(help="Comma-separated: off, on, auto.")] = "off,auto",
    mode: Annotated[str, typer.Option(help="input, step, e2e (comma-separated) or all.")] = "all",
    baseline: Annotated[Optional[bool], typer.Option(
        "--baseline/--no-baseline", help="Time the paper's tf_keras stack too (default: when installed).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md and bench.png.")] = Path("runs/bench"),
    repeats: Annotated[int, typer.Option(help="Timed repeats of each measurement, interleaved.")] = 3,
    step_images: Annotated[int, typer.Option(help="Images per timed repeat of step and e2e.")] = 40,
    input_images: Annotated[int, typer.Option(help="Images per timed repeat of the input pipeline.")] = 1280,
    model: Annotated[str, typer.Option(help="Backbone.")] = "InceptionV3",
    suggest: Annotated[bool, typer.Option(
        help="Print the fastest setting and largest batch (from OUT/bench.json when there is one).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the measurements and an estimated time, then stop.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only the final tables.")] = False,
) -> None:
    """Throughput per batch size, precision and XLA, side by side with the paper's Keras stack."""
    from engine import bench as bench_lib, bench_report
    from engine.config import BenchConfig

    modes = ("input", "step", "e2e") if mode == "all" else parse_list(mode, str, "--mode")
    cfg = BenchConfig(records=records, out=out, batch_sizes=parse_ints(batch_sizes, "--batch-sizes"),
                      image_size=image_size, precisions=parse_list(precision, str, "--precision") or (),
                      xlas=parse_list(xla, str, "--xla") or (), modes=modes or (), baseline=baseline,
                      repeats=repeats, step_images=step_images, input_images=input_images, model=model).validate()
    if suggest and (previous := bench_lib.load(out)) is not None:
        out_console.print(f"from {out / 'bench.json'} ({previous['date']}): {previous['suggestion']['text']}",
                          highlight=False, soft_wrap=True)
        return
    if dry_run:
        from engine import flops
        scale = flops.measured_matmul_peak("float32") / bench_lib.REFERENCE_MATMUL_GFLOPS
        seconds, count = bench_lib.estimate_seconds(cfg, scale)
        engine_settings, _ = bench_lib.settings(cfg)
        out_console.print(f"engine settings: {', '.join(f'{p}/{x}' for p, x in engine_settings)}; batch sizes "
                          f"{', '.join(map(str, cfg.batch_sizes))}; modes {', '.join(cfg.modes)}; baseline "
                          f"{'yes' if cfg.baseline is not False and bench_lib.baseline_available() else 'no'}")
        out_console.print(f"{count} measurements x ({cfg.repeats} repeats + warm-up): roughly "
                          f"{seconds / 60:.0f} min (reference-machine rates scaled by this machine's "
                          f"matmul speed, x{scale:.2f}; see benchmarks/RESULTS.md)", highlight=False)
        return
    result = bench_lib.run(cfg, quiet=quiet, on_note=None if quiet else
                           (lambda text: progress_console().print(text, highlight=False)))
    bench_report.print_tables(result, out_console)
    out_console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'bench.png'}", highlight=False)


def progress_console() -> Console:
    from engine.progress import console
    return console


@app.command()
def recipes() -> None:
    """List the known dataset recipes (where to get each source, its layout, licence)."""
    from engine.layouts import load_recipe, recipe_names

    for recipe_name in recipe_names():
        r = load_recipe(recipe_name)
        out_console.print(f"[bold]{r.name}[/bold]: {r.title}", highlight=False)
        for label, value in (("get it", r.url), ("layout", r.layout), ("classes", r.classes),
                             ("licence", r.licence), ("note", r.notes)):
            if value:
                out_console.print(f"  {label}: {value}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2.

    Typer (standalone) prints usage errors itself and exits 2; anything else
    escaping is a bug and keeps its traceback.
    """
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
