"""The ``engine`` command line: parses options into configs and calls the layers.

The options of ``build-records``, ``train``, ``compare``, ``lr-find`` and
``bench`` are generated from the config dataclasses (``engine.options``), so
every field is an option with its docstring as help, in its help panel. An
option left out is None here and takes the config's default (for ``compare``:
the preset's, unless a ``--config`` file sets it). Each command assembles its
config and calls the layers, which work and print (``engine.study.show``);
they are imported inside the commands, so ``engine --help`` does not wait for
TensorFlow.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine import options
from engine.config import BENCH_MODES, STUDY_MODE, BenchConfig, RecordsConfig, TrainConfig
from engine.errors import RuntimeFailure, Terminated, UserError, exit_status, one_line
from engine.study import show

RESUME = "rerun the same command to resume"


class Commands(typer.core.TyperGroup):
    def invoke(self, ctx):
        ctx.meta["help"] = "--help" in ctx.args  # a command's help is text only: no TensorFlow to import
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # Typer would exit 130 without a word
            print(f"interrupted: {RESUME}", file=sys.stderr)
            raise typer.Exit(130) from None

    def get_help_option(self, ctx):
        return options.tidy_help(super().get_help_option(ctx), [])

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:  # the help option is made (and kept) once per command
            options.tidy_help(command.get_help_option(ctx), command.params)
        return command


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=Commands,
                  help="Adam learning rate x batch size studies of InceptionV3 on chest X-rays.")
RecordsArg = Annotated[Optional[Path], typer.Argument(
    help="Records folder (omit: the embedded synthetic set).", metavar="RECORDS", show_default=False)]
Quiet = Annotated[bool, options.flag("--quiet", "Only the final summary.")]
Force = Annotated[bool, options.flag("--force", "Start over if OUT holds another config.")]


@app.callback()
def start(ctx: typer.Context, verbose: Annotated[bool, options.flag(
        "--verbose", "Show TensorFlow's start-up and log lines (also $ENGINE_VERBOSE=1).", None)] = False) -> None:
    """Adam learning rate x batch size studies of InceptionV3 on chest X-rays."""
    needless = ctx.invoked_subcommand in ("recipes", "synthetic") or ctx.meta.get("help")
    if not (needless or verbose or os.environ.get("ENGINE_VERBOSE")):
        from engine.progress import quiet_tensorflow
        # Importing TensorFlow takes seconds: a terminal is told, on stdout (its stderr is captured meanwhile).
        with show.console.status("starting: importing TensorFlow") if show.console.is_terminal else nullcontext():
            quiet_tensorflow()


@app.command()
def synthetic(
    out: Annotated[Path, typer.Argument(help="Folder to create: OUT/{train,val,test}/{covid,normal}/*.png",
                                        metavar="OUT")],
    image_size: Annotated[int, typer.Option(help="Side of the square images, in pixels.", metavar="N")] = 299,
    counts: Annotated[str, typer.Option(help="Images per split.", metavar="TRAIN,VAL,TEST")] = "500,100,100",
    seed: Annotated[int, typer.Option(help="Same seed, same images.", metavar="N")] = 0,
    workers: Annotated[Optional[int], typer.Option(help=options.with_default("Processes that draw images.",
                                                                             "all cores"), metavar="N")] = None,
) -> None:
    """Generate synthetic chest X-rays (covid with ground-glass opacities, normal without)."""
    from engine.data import synthetic as synth
    from engine.progress import progress

    numbers = options.coerce(options.Field("counts", ("counts",), tuple[int, int, int], ""), counts)
    with progress(sum(numbers), "Generating", "images") as advance:
        summary = synth.generate(out, image_size=image_size, counts=dict(zip(("train", "val", "test"), numbers)),
                                 seed=seed, workers=workers, on_progress=advance)
    show.console.print(f"wrote {sum(numbers)} images to {out} ({summary['images_per_second']:,.0f} images/s)")


@app.command("build-records")
@options.with_fields(options.RECORDS, options.default_of(RecordsConfig()), skip=("command",))
def build_records(
    src: Annotated[Optional[Path], typer.Argument(
        help="Image folder. Omit both SRC and OUT to build the embedded synthetic set.", metavar="SRC")] = None,
    out: Annotated[Optional[Path], typer.Argument(help="Records folder to create.", metavar="OUT")] = None,
    quiet: Annotated[bool, options.flag("--quiet", "No progress bars.")] = False,
    **given,
) -> None:
    """Image folder -> pre-resized TFRecord shards with a manifest."""
    from engine.data import embedded, records

    values = options.from_command_line(given, options.RECORDS)
    if src is None and out is None:
        return show.embedded(*embedded.synthetic_records(
            image_size=values.get("image_size", 299), seed=values.get("seed", 0), quiet=quiet,
            workers=values.get("workers"), subset=values.get("subset")))
    if src is None or out is None:
        raise UserError("build-records takes SRC and OUT (or neither, for the embedded synthetic set)")
    command = "engine " + shlex.join(sys.argv[1:])
    cfg = options.assemble(RecordsConfig(src=src, out=out, command=command), values, options.RECORDS)
    show.records(records.build(cfg, quiet=quiet), out)


@app.command()
@options.with_fields(options.TRAIN, options.default_of(TrainConfig()))
def train(records: RecordsArg = None,
          out: Annotated[Path, options.option("Run folder (resumed if it holds this run).", "DIR")]
          = Path("runs/train"),
          force: Force = False, quiet: Quiet = False, **given) -> None:
    """Train one model (one trial of the study) and evaluate it with clinical metrics."""
    from engine import training
    from engine.study import inputs

    values = options.from_command_line(given, options.TRAIN)
    cfg = inputs.with_records(options.assemble(TrainConfig(records=records, out=out), values, options.TRAIN), quiet)
    show.trained(training.train(cfg, quiet=quiet, force=force, size_given="image_size" in values), out)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder of `engine train`.", metavar="RUN")],
    records: Annotated[Optional[Path], typer.Argument(
        help=options.with_default("Records folder.", "the run's"), metavar="RECORDS", show_default=False)] = None,
    split: Annotated[str, typer.Option(help="The split to score.", metavar="train|val|test")] = "test",
    threshold: Annotated[Optional[float], typer.Option(
        help=options.with_default("Decision threshold on P(positive class).", "the run's chosen one"),
        metavar="NUMBER")] = None,
) -> None:
    """Metrics of a trained run's model on a split, with bootstrap intervals."""
    from engine import training

    show.metrics(split, training.evaluate_folder(run, split, records, threshold))


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder of `engine train`.", metavar="RUN")],
    images: Annotated[list[Path], typer.Argument(help="Image files.", metavar="IMAGE...")],
    gradcam: Annotated[Optional[Path], typer.Option(help="Write a Grad-CAM overlay PNG per image here.",
                                                    metavar="DIR")] = None,
) -> None:
    """Predicted class and its probability for each image, e.g. `normal 0.996`."""
    from engine import training

    show.predictions(*training.predict_files(run, images, gradcam), len(images))


@app.command()
@options.with_fields(options.SWEEP, options.sweep_default)
def compare(
    records: RecordsArg = None,
    out: Annotated[Path, options.option("Sweep folder (rerun to resume).", "DIR")] = Path("runs/compare"),
    config: Annotated[Optional[Path], options.option(
        "A TOML file with these options as keys (the command line wins over it, it over the preset).",
        "FILE")] = None,
    parallel: Annotated[str, options.option(
        "Trials at once: N processes (one GPU each, or on a CPU a slice of the cores each). auto: one per GPU; "
        "on a CPU the count measured fastest here that memory holds (until measured: the most that split the "
        "cores evenly).", "N|auto", envvar="ENGINE_PARALLEL")] = "auto",
    dry_run: Annotated[bool, options.flag("--dry-run", "Print the trials and an estimated time, then stop.")] = False,
    json_: Annotated[bool, options.flag("--json", "With --dry-run: the trial list as JSON.")] = False,
    force: Annotated[bool, options.flag("--force", "Start over if OUT holds another sweep.")] = False,
    quiet: Quiet = False,
    **given,
) -> None:
    """Run the paper's learning-rate or batch-size study and report it."""
    from_file = options.from_toml(config, options.SWEEP) if config else {}
    values = options.from_command_line(given, options.SWEEP)
    sweep = options.sweep_config(values, from_file, records, out)
    # Imported after the options are checked: a bad one fails before TensorFlow loads (~5 s).
    from engine.study import compare as compare_lib
    compare_lib.compare(sweep, parallel=parallel, dry_run=dry_run, as_json=json_, force=force, quiet=quiet,
                        size_given="image_size" in {**from_file, **values})


@app.command()
def resume(
    folder: Annotated[Path, typer.Argument(help="A sweep folder (holding sweep.json).", metavar="DIR")],
    trial: Annotated[str, typer.Option(help=options.with_default(
        "Only this trial: its name or index (engine report names them).", "every unfinished trial"),
        metavar="NAME|INDEX", show_default=False)] = "",
    force: Annotated[bool, options.flag("--force", "With --trial: start that trial over.", None)] = False,
    quiet: Quiet = False,
) -> None:
    """Run a stored sweep again from its sweep.json: its unfinished trials, or one (engine report's reruns)."""
    from engine.study import compare as compare_lib

    compare_lib.resume(folder, trial=trial, force=force, quiet=quiet)


@app.command("lr-find")
@options.with_fields(options.TRAIN, options.default_of(TrainConfig()),
                     skip=("lr", "epochs", "schedule", "warmup_epochs"))
def lr_find(
    records: RecordsArg = None,
    out: Annotated[Path, options.option(
        "Folder for lr_find.json and lr_find.png (a sweep folder's report marks the suggestion).", "DIR")]
    = Path("runs/lr-find"),
    start: Annotated[float, options.option("First learning rate.", "NUMBER", "Range test")] = 1e-7,
    end: Annotated[float, options.option("Last learning rate.", "NUMBER", "Range test")] = 1.0,
    steps: Annotated[int, options.option("Steps of the exponential ramp.", "N", "Range test")] = 100,
    quiet: Annotated[bool, options.flag("--quiet", "No progress output.")] = False,
    **given,
) -> None:
    """Learning-rate range test: loss against an exponentially growing learning rate, and a suggestion."""
    from engine.study import lrfind

    cfg = options.assemble(TrainConfig(records=records), options.from_command_line(given, options.TRAIN),
                           options.TRAIN)
    show.lr_found(lrfind.run(cfg, out, start=start, end=end, steps=steps, quiet=quiet), out)


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="A sweep folder (several shards' trials are merged).",
                                           metavar="DIR")],
) -> None:
    """Rewrite a sweep's summary, plots and report from what its trials wrote."""
    from engine.study import report  # reads files only: no TensorFlow to import

    report.rewrite(folder)


@app.command()
@options.with_fields(options.BENCH, options.default_of(BenchConfig()), skip=("out",))
def bench(
    records: RecordsArg = None,
    out: Annotated[Path, options.option("Folder for bench.json, bench.md and bench.png.", "DIR")] = Path("runs/bench"),
    suggest: Annotated[bool, options.flag(
        "--suggest", "Print the fastest setting and largest batch (from OUT/bench.json when there is one).")] = False,
    dry_run: Annotated[bool, options.flag("--dry-run",
                                          "Print the measurements and an estimated time, then stop.")] = False,
    quiet: Annotated[bool, options.flag("--quiet", "Only the final tables.")] = False,
    **given,
) -> None:
    """Throughput per batch size, precision and XLA, side by side with the paper's Keras stack."""
    from engine.bench import report, runner, study
    from engine.progress import console

    given["mode"] = ",".join(BENCH_MODES) if given.get("mode") == "all" else given.get("mode")
    cfg = options.assemble(BenchConfig(records=records, out=out), options.from_command_line(given, options.BENCH),
                           options.BENCH).validate()
    previous = runner.load(out) if suggest else None
    if previous is not None and "suggestion" in previous:
        return show.line(f"from {out / 'bench.json'} ({previous['date']}): {previous['suggestion']['text']}")
    studying = STUDY_MODE in cfg.modes
    if dry_run:
        return show.line((study if studying else runner).dry_run_text(cfg))
    note = None if quiet else (lambda text: console.print(text, highlight=False))
    if studying:
        show.line(study.markdown(study.run(cfg, quiet=quiet, on_note=note)))
        return show.line(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    report.print_tables(runner.run(cfg, quiet=quiet, on_note=note), show.console)
    show.line(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'bench.png'}")


@app.command()
def recipes() -> None:
    """List the known dataset recipes (where to get each source, its layout, licence)."""
    show.recipes()


def main() -> None:
    """Entry point: every failure the engine expects is one line on stderr and
    an exit status: 2 a user error (bad option or input, a folder it cannot
    write), 1 a runtime failure (a full disk, damaged state, a failed trial), 3
    a sweep other live runners hold trials of, 130 Ctrl-C, 143 SIGTERM. Typer
    prints usage errors itself; anything else escaping keeps its traceback."""
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
