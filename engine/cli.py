"""The ``engine`` command line: parses options into configs and calls the modules."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from engine.config import RecordsConfig, parse_floats, parse_ints
from engine.errors import UserError

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
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # click usage errors
        import click
        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
