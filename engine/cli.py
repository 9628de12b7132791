"""The ``engine`` command line: parses options into configs and calls the layers.

The options of ``build-records``, ``train``, ``compare``, ``lr-find`` and
``bench`` are generated from the config dataclasses (``engine.options``), so
every field is an option with its docstring as help. An option left out is
None here and takes the config's default (for ``compare``: the preset's,
unless a ``--config`` file sets it).
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import signal
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from engine import options
from engine.config import BENCH_MODES, STUDY_MODE, BenchConfig, RecordsConfig, TrainConfig
from engine.errors import RuntimeFailure, Terminated, UserError, exit_status, one_line

RESUME = "rerun the same command to resume"


class Commands(typer.core.TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # Typer would exit 130 without a word
            print(f"interrupted: {RESUME}", file=sys.stderr)
            raise typer.Exit(130) from None


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=Commands,
                  help="Adam learning rate x batch size studies of InceptionV3 on chest X-rays.")
out_console = Console()
RecordsArg = Annotated[Optional[Path], typer.Argument(help="Records folder (omit: the embedded synthetic set).")]
Quiet = Annotated[bool, typer.Option(help="Only the final summary.")]
Force = Annotated[bool, typer.Option(help="Start over if OUT holds another config.")]


def with_fields(flat: dict[str, options.Field], defaults, skip: tuple[str, ...] = ()):
    """Adds one option per config field to a command (its ``**given`` receives them)."""
    def decorate(func):
        hints = typing.get_type_hints(func, include_extras=True)
        params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(func).parameters.values()
                  if p.kind != p.VAR_KEYWORD]
        taken = {p.name for p in params} | set(skip)
        for name, f in flat.items():
            if name not in taken:
                params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                                annotation=option_annotation(f, defaults(f))))
        func.__signature__ = inspect.Signature(params)
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func
    return decorate


def option_annotation(f: options.Field, default: str):
    help_text = f"{f.help.replace('``', '')} (default: {default})"
    if f.is_flag:
        return Annotated[Optional[bool], typer.Option(f"{f.flag}/--no-{f.flag[2:]}", help=help_text,
                                                      show_default=False)]
    if f.name == "list":  # a repeatable option
        return Annotated[Optional[list[str]], typer.Option(f.flag, help=help_text, show_default=False)]
    metavar = {int: "INT", float: "NUMBER", Path: "PATH"}.get(f.base, "LIST" if "tuple" in str(f.base) else "TEXT")
    return Annotated[Optional[str], typer.Option(f.flag, help=help_text, metavar=metavar, show_default=False)]


@app.callback()
def start(ctx: typer.Context, verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show TensorFlow's start-up and log lines (also ENGINE_VERBOSE=1).")] = False) -> None:
    """Adam learning rate x batch size studies of InceptionV3 on chest X-rays."""
    import os

    if ctx.invoked_subcommand not in ("recipes", "synthetic") and not (verbose or os.environ.get("ENGINE_VERBOSE")):
        from engine.progress import quiet_tensorflow
        quiet_tensorflow()


def command_line() -> str:
    return "engine " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command()
def synthetic(
    out: Annotated[Path, typer.Argument(help="Folder to create: OUT/{train,val,test}/{covid,normal}/*.png")],
    image_size: Annotated[int, typer.Option(help="Side of the square images.")] = 299,
    counts: Annotated[str, typer.Option(help="Images per split: train,val,test.")] = "500,100,100",
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: all cores).")] = None,
) -> None:
    """Generate synthetic chest X-rays (covid with ground-glass opacities, normal without)."""
    from engine.data import synthetic as synth
    from engine.progress import progress

    numbers = options.coerce(options.Field("counts", ("counts",), tuple[int, int, int], ""), counts)
    with progress(sum(numbers), "Generating", "images") as advance:
        summary = synth.generate(out, image_size=image_size, counts=dict(zip(("train", "val", "test"), numbers)),
                                 seed=seed, workers=workers, on_progress=advance)
    out_console.print(f"wrote {sum(numbers)} images to {out} ({summary['images_per_second']:,.0f} images/s)")


@app.command("build-records")
@with_fields(options.RECORDS, options.default_of(RecordsConfig()), skip=("command",))
def build_records(
    src: Annotated[Optional[Path], typer.Argument(
        help="Image folder. Omit both SRC and OUT to build the embedded synthetic set.")] = None,
    out: Annotated[Optional[Path], typer.Argument(help="Records folder to create.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    **given,
) -> None:
    """Image folder -> pre-resized TFRecord shards with a manifest."""
    from engine.data import embedded, records
    from engine.data.manifest import load_manifest

    values = options.from_command_line(given, options.RECORDS)
    if src is None and out is None:
        folder, built = embedded.synthetic_records(image_size=values.get("image_size", 299), seed=values.get("seed", 0),
                                                   quiet=quiet, workers=values.get("workers"),
                                                   subset=values.get("subset"))
        if not built:
            out_console.print(f"embedded synthetic set already built: {folder}")
        print_records(load_manifest(folder), folder)
        return
    if src is None or out is None:
        raise UserError("build-records takes SRC and OUT (or neither, for the embedded synthetic set)")
    cfg = options.assemble(RecordsConfig(src=src, out=out, command=command_line()), values, options.RECORDS)
    print_records(records.build(cfg, quiet=quiet), out)


@app.command()
@with_fields(options.TRAIN, options.default_of(TrainConfig()))
def train(records: RecordsArg = None,
          out: Annotated[Path, typer.Option(help="Run folder (resumed if it holds this run).")] = Path("runs/train"),
          force: Force = False, quiet: Quiet = False, **given) -> None:
    """Train one model (one trial of the study) and evaluate it with clinical metrics."""
    from engine import training

    values = options.from_command_line(given, options.TRAIN)
    cfg = options.assemble(TrainConfig(records=records, out=out), values, options.TRAIN)
    result = training.train(cfg, quiet=quiet, force=force, size_given="image_size" in values)
    out_console.print(f"{out}: {result['status']} after {result['epochs_done']} epochs "
                      f"(precision {result['precision']['value']}, XLA {result['xla']['value']})")
    for split in ("val", "test"):
        if split in result:
            print_metrics(split, result[split])


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder of `engine train`.")],
    records: Annotated[Optional[Path], typer.Argument(help="Records (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="train | val | test.")] = "test",
    threshold: Annotated[Optional[float], typer.Option(help="Default: the run's chosen threshold.")] = None,
) -> None:
    """Metrics of a trained run's model on a split, with bootstrap intervals."""
    from engine import training

    print_metrics(split, training.evaluate_folder(run, split, records, threshold))


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder of `engine train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    gradcam: Annotated[Optional[Path], typer.Option(help="Write a Grad-CAM overlay PNG per image here.")] = None,
) -> None:
    """Predicted class and its probability for each image, e.g. `normal 0.996`."""
    from engine import training

    scored, unreadable = training.predict_files(run, images, gradcam)
    for path, name, probability in scored:
        out_console.print(f"{path}: {name} {probability:.3g}", highlight=False, soft_wrap=True)
    for path, reason in unreadable:
        print(f"{path}: unreadable ({reason})", file=sys.stderr)
    if unreadable:
        raise RuntimeFailure(f"{len(unreadable)} of {len(images)} images could not be read (listed above)")


@app.command()
@with_fields(options.SWEEP, options.sweep_default)
def compare(
    records: RecordsArg = None,
    out: Annotated[Path, typer.Option(help="Sweep folder (rerun to resume).")] = Path("runs/compare"),
    config: Annotated[Optional[Path], typer.Option(
        help="A TOML file with these options as keys (the command line wins over it, it over the preset).")] = None,
    parallel: Annotated[str, typer.Option(
        envvar="ENGINE_PARALLEL",
        help="Trials at once: N processes (one GPU each, or on a CPU a slice of the cores each), or auto: one "
             "per GPU; on a CPU the count measured fastest here that memory holds, before any measurement the "
             "most that split the cores evenly.")] = "auto",
    dry_run: Annotated[bool, typer.Option(help="Print the trials and an estimated time, then stop.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="With --dry-run: the trial list as JSON.")] = False,
    force: Annotated[bool, typer.Option(help="Start over if OUT holds another sweep.")] = False,
    quiet: Quiet = False,
    **given,
) -> None:
    """Run the paper's learning-rate or batch-size study and report it."""
    from engine.study import launch, report, sweep as sweep_lib

    from_file = options.from_toml(config, options.SWEEP) if config else {}
    values = options.from_command_line(given, options.SWEEP)
    sweep = options.sweep_config(values, from_file, records, out)
    launch.check_parallel(parallel, sweep)  # a bad value fails before any records are built
    if dry_run:
        plan = sweep_lib.plan_summary(sweep, parallel)
        if json_:
            print(json.dumps(plan, indent=1))
            return
        table = Table("index", "trial", "setting", "lr", "batch", "epochs", "seed")
        for t in plan["trials"]:
            table.add_row(*(str(t[k]) if k != "lr" else f"{t[k]:g}" for k in
                            ("index", "name", "setting", "lr", "batch_size", "epochs", "seed")))
        out_console.print(table)
        at_once = f" in {plan['processes']} processes ({plan['processes_why']})" if plan["processes"] > 1 else ""
        out_console.print(f"{len(plan['trials'])} trials{at_once}; roughly {plan['seconds'] / 60:.0f} min "
                          f"(rates: {plan['basis']}); disk: {plan['disk']['text']}", highlight=False, soft_wrap=True)
        out_console.print(plan["repeats"]["text"], highlight=False, soft_wrap=True)
        return
    if (sweep := launch.resolve_trial(sweep)) is None:
        return
    sweep = sweep_lib.with_records(sweep, quiet, size_given="image_size" in {**from_file, **values})
    counts = sweep_lib.split_counts(sweep)
    results = []
    child = bool(os.environ.get(launch.EVENTS_ENV))  # a process of a parent's --parallel run
    count, why = (1, "a child process") if child else launch.parallel_count(parallel, sweep, counts["channels"])
    if count > 1 and not quiet:
        out_console.print(f"{count} trial processes ({why})", highlight=False, soft_wrap=True)
    from engine.study.dashboard import Dashboard
    plan = sweep_lib.trials(sweep)
    if child:  # the parent shows the events and writes the report
        results = sweep_lib.run(sweep, force=force, on_event=launch.EventWriter(),
                                command=launch.rerun_args(records, out, config, given))
    else:
        with Dashboard(sweep_lib.total_steps(plan, counts["train"]), quiet=quiet) as dashboard:
            if count > 1:
                sweep_lib.check_existing(out, sweep, force)  # damaged or changed: one line here, not one per child

                def on_event(kind, trial, info):
                    dashboard(kind, trial, info)
                    if kind == "end":
                        results.append(info)
                for trial in plan:
                    dashboard("queued", trial, {})
                launch.run_parallel(count, sys.argv[1:], sweep.base.records, quiet, plan=plan, on_event=on_event,
                                    show=lambda text: dashboard.console.print(text, highlight=False, soft_wrap=True))
            else:
                results = sweep_lib.run(sweep, force=force, on_event=dashboard,
                                        command=launch.rerun_args(records, out, config, given))
    if not sweep.trial and not child:
        result = report.write(out)
        out_console.print(result["ranking"]["text"].replace("**", ""), highlight=False, soft_wrap=True)
        out_console.print(f"report: {out / 'report.md'}; curves: {out / 'curves.png'}; "
                          f"TensorBoard: tensorboard --logdir {out / 'trials'}", highlight=False, soft_wrap=True)
    failed = [r for r in results if r.get("status") == "failed"]
    if failed:  # exit status 1: worth retrying (a job array's task, a scheduler's retry)
        raise RuntimeFailure(f"{len(failed)} trial{'s' if len(failed) > 1 else ''} failed ({failed[0]['reason']})"
                             + ("" if "rerun" in failed[0]["reason"] else "; rerun the same command to retry"))


@app.command("lr-find")
@with_fields(options.TRAIN, options.default_of(TrainConfig()), skip=("lr", "epochs", "schedule", "warmup_epochs"))
def lr_find(
    records: RecordsArg = None,
    out: Annotated[Path, typer.Option(help="Folder for lr_find.json/.png (a sweep folder marks it in its report).")]
    = Path("runs/lr-find"),
    start: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option(help="Last learning rate.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Steps of the exponential ramp.")] = 100,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    **given,
) -> None:
    """Learning-rate range test: loss against an exponentially growing learning rate, and a suggestion."""
    from engine.study import lrfind

    cfg = options.assemble(TrainConfig(records=records), options.from_command_line(given, options.TRAIN),
                           options.TRAIN)
    result = lrfind.run(cfg, out, start=start, end=end, steps=steps, quiet=quiet)
    suggested = "none (too few steps)" if result["suggested"] is None else f"{result['suggested']:.3g}"
    out_console.print(f"{result['steps_run']} steps; suggested learning rate {suggested} ({result['rule']}); "
                      f"{result['verdict']}plot: {out / 'lr_find.png'}", highlight=False, soft_wrap=True)


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="A sweep folder (several shards' trials are merged).")],
) -> None:
    """Rewrite a sweep's summary, plots and report from what its trials wrote."""
    from engine.study import report

    if not (folder / "sweep.json").is_file():
        raise UserError(f"{folder} is not a sweep folder (no sweep.json)")
    result = report.write(folder)
    out_console.print("\n".join(report.states_text(result["trials"])), highlight=False, soft_wrap=True)
    out_console.print(result["ranking"]["text"].replace("**", ""), highlight=False, soft_wrap=True)


@app.command()
@with_fields(options.BENCH, options.default_of(BenchConfig()), skip=("out",))
def bench(
    records: RecordsArg = None,
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md and bench.png.")] = Path("runs/bench"),
    suggest: Annotated[bool, typer.Option(
        help="Print the fastest setting and largest batch (from OUT/bench.json when there is one).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the measurements and an estimated time, then stop.")] = False,
    quiet: Annotated[bool, typer.Option(help="Only the final tables.")] = False,
    **given,
) -> None:
    """Throughput per batch size, precision and XLA, side by side with the paper's Keras stack."""
    from engine.bench import report, runner

    if given.get("mode") == "all":
        given["mode"] = ",".join(BENCH_MODES)
    cfg = options.assemble(BenchConfig(records=records, out=out), options.from_command_line(given, options.BENCH),
                           options.BENCH).validate()
    if suggest and (previous := runner.load(out)) is not None and "suggestion" in previous:
        out_console.print(f"from {out / 'bench.json'} ({previous['date']}): {previous['suggestion']['text']}",
                          highlight=False, soft_wrap=True)
        return
    from engine.bench import study
    studying = STUDY_MODE in cfg.modes
    if dry_run:
        out_console.print((study if studying else runner).dry_run_text(cfg), highlight=False)
        return
    from engine.progress import console
    note = None if quiet else (lambda text: console.print(text, highlight=False))
    if studying:
        out_console.print(study.markdown(study.run(cfg, quiet=quiet, on_note=note)), highlight=False)
        out_console.print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}", highlight=False)
        return
    result = runner.run(cfg, quiet=quiet, on_note=note)
    report.print_tables(result, out_console)
    out_console.print(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'bench.png'}", highlight=False)


@app.command()
def recipes() -> None:
    """List the known dataset recipes (where to get each source, its layout, licence)."""
    from engine.data.layouts import load_recipe, recipe_names

    for recipe_name in recipe_names():
        r = load_recipe(recipe_name)
        out_console.print(f"[bold]{r.name}[/bold]: {r.title}", highlight=False)
        for label, value in (("get it", r.url), ("layout", r.layout), ("classes", r.classes),
                             ("licence", r.licence), ("note", r.notes)):
            if value:
                out_console.print(f"  {label}: {value}", highlight=False, soft_wrap=True)


def print_records(manifest: dict, folder: Path) -> None:
    """Counts per split and class, and what needs the user's attention."""
    classes = sorted(manifest["label_map"], key=manifest["label_map"].get)
    table = Table(title=f"{folder}  ({manifest['image_size'][0]} px, {manifest['channels']} channel"
                        f"{'s' if manifest['channels'] > 1 else ''}, {manifest['encoding']})")
    for column in ("split", *(f"{name} ({manifest['label_map'][name]})" for name in classes), "total", "shards"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, info in manifest["splits"].items():
        table.add_row(split, *(str(info["per_class"][c]) for c in classes), str(info["count"]),
                      str(len(info["shards"])))
    out_console.print(table)
    for note in manifest["notes"]:
        out_console.print(f"note: {note}")
    if manifest["rejects"]:
        out_console.print(f"skipped {manifest['rejects']} unreadable files, reasons in {folder / 'rejects.csv'}")
    out_console.print(f"{manifest['images_per_second']:,.0f} images/s in {manifest['seconds']:.1f} s")


def print_metrics(split: str, summary: dict) -> None:
    """One split's metrics with their intervals."""
    table = Table(title=f"{split} ({summary['n']} images, positive class {summary['positive_class']}, "
                        f"threshold {summary['threshold']:.3g})")
    for column, justify in (("metric", "left"), ("value", "right"), ("95 % interval", "right")):
        table.add_column(column, justify=justify)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for name, value in summary["metrics"].items():
        low, high = summary["intervals"][name]
        table.add_row(name, fmt(value), f"{fmt(low)} - {fmt(high)}")
    out_console.print(table)


def main() -> None:
    """Entry point: every failure the engine expects is one line on stderr and
    an exit status: 2 a user error (bad option or input, a folder it cannot
    write), 1 a runtime failure (a full disk, damaged state, a failed trial),
    130 Ctrl-C, 143 SIGTERM. Typer prints usage errors itself and exits 2;
    anything else escaping is a bug and keeps its traceback."""
    signal.signal(signal.SIGTERM, terminate)
    try:
        app()
    except (UserError, RuntimeFailure, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(exit_status(err))
    except Terminated:
        print(f"terminated: {RESUME}", file=sys.stderr)
        sys.exit(143)


def terminate(*_) -> None:
    """SIGTERM unwinds the stack as Ctrl-C does (checkpoint whole, locks released)."""
    raise Terminated()


if __name__ == "__main__":
    main()
