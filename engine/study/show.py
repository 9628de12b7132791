"""What the commands print on stdout: records and metrics tables, a trained
run's summary, a sweep's plan and its ranking, predictions, the recipes.

Rich tables on a terminal; off one rich prints them as plain text, without
control codes. Progress and errors go to stderr elsewhere
(``engine.progress``, ``engine.cli.main``).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.errors import RuntimeFailure

console = Console()


def line(text: str) -> None:
    """One line as written (no markup or highlighting, never wrapped)."""
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def records(manifest: dict, folder: Path) -> None:
    """Counts per split and class, and what needs the user's attention."""
    classes = sorted(manifest["label_map"], key=manifest["label_map"].get)
    table = Table(title=f"{folder}  ({manifest['image_size'][0]} px, {manifest['channels']} channel"
                        f"{'s' if manifest['channels'] > 1 else ''}, {manifest['encoding']})")
    for column in ("split", *(f"{name} ({manifest['label_map'][name]})" for name in classes), "total", "shards"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, info in manifest["splits"].items():
        table.add_row(split, *(str(info["per_class"][c]) for c in classes), str(info["count"]),
                      str(len(info["shards"])))
    console.print(table)
    for note in manifest["notes"]:
        console.print(f"note: {note}")
    if manifest["rejects"]:
        console.print(f"skipped {manifest['rejects']} unreadable files, reasons in {folder / 'rejects.csv'}")
    console.print(f"{manifest['images_per_second']:,.0f} images/s in {manifest['seconds']:.1f} s")


def embedded(folder: Path, built: bool) -> None:
    """``engine build-records`` without SRC and OUT: the embedded set's records."""
    from engine.data.manifest import load_manifest

    if not built:
        console.print(f"embedded synthetic set already built: {folder}")
    records(load_manifest(folder), folder)


def metrics(split: str, summary: dict) -> None:
    """One split's metrics with their intervals."""
    table = Table(title=f"{split} ({summary['n']} images, positive class {summary['positive_class']}, "
                        f"threshold {summary['threshold']:.3g})")
    for column, justify in (("metric", "left"), ("value", "right"), ("95 % interval", "right")):
        table.add_column(column, justify=justify)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for name, value in summary["metrics"].items():
        low, high = summary["intervals"][name]
        table.add_row(name, fmt(value), f"{fmt(low)} - {fmt(high)}")
    console.print(table)


def trained(result: dict, out: Path) -> None:
    """``engine train``'s summary: how the run ended, its numerics, its metrics."""
    console.print(f"{out}: {result['status']} after {result['epochs_done']} epochs "
                  f"(precision {result['precision']['value']}, XLA {result['xla']['value']})")
    for split in ("val", "test"):
        if split in result:
            metrics(split, result[split])


def lr_found(result: dict, out: Path) -> None:
    """``engine lr-find``'s summary: the suggested rate and where the plot is."""
    suggested = "none (too few steps)" if result["suggested"] is None else f"{result['suggested']:.3g}"
    line(f"{result['steps_run']} steps; suggested learning rate {suggested} ({result['rule']}); "
         f"{result['verdict']}plot: {out / 'lr_find.png'}")


def plan(summary: dict, as_json: bool = False) -> None:
    """``engine compare --dry-run``: the trials (or their JSON, for sizing a
    job array), the estimated time and disk, what the repeats allow."""
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    columns = ["index", "name", "setting", "lr", "batch_size", "epochs", "seed"]
    if summary["splits"]["count"] > 1:
        columns.insert(-1, "split")
    table = Table(*(c.replace("name", "trial").replace("batch_size", "batch") for c in columns))
    for t in summary["trials"]:
        table.add_row(*(str(t[k]) if k != "lr" else f"{t[k]:g}" for k in columns))
    console.print(table)
    line(f"splits: {summary['splits']['text']}")
    at_once = f" in {summary['processes']} processes ({summary['processes_why']})" if summary["processes"] > 1 else ""
    line(f"{len(summary['trials'])} trials{at_once}; roughly {summary['seconds'] / 60:.0f} min "
         f"(rates: {summary['basis']}); disk: {summary['disk']['text']}")
    line(summary["repeats"]["text"])


# More claims than this (a grid sweep) are counted by verdict instead of listed.
CLAIMS_LISTED = 5


def summary(written: dict, folder: Path) -> None:
    """The closing lines of a sweep (at most 8): what was run, the answer, the
    paper's claims' verdicts, where the report is."""
    line(f"{written['what']}.")
    line(f"Answer: {written['answer']}".replace("**", "").replace("`", ""))
    claims = written["claims"]
    if len(claims) > CLAIMS_LISTED:
        counts = {}
        for c in claims:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        line("The paper's claims: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + ".")
    for c in claims if len(claims) <= CLAIMS_LISTED else []:
        decide = f" ({c['remedy']})" if c.get("remedy") else ""
        line(f"Claim \"{c.get('shown', c['claim'])}\": {c['verdict']}{decide}.")
    line(f"Report: {folder / 'report.md'} (and report.html); TensorBoard: tensorboard --logdir {folder / 'trials'}")


def predictions(scored: list, unreadable: list, count: int) -> None:
    """Each image's class and its probability; the unreadable ones on stderr,
    a runtime failure when there are any."""
    import sys

    for path, name, probability in scored:
        line(f"{path}: {name} {probability:.3g}")
    for path, reason in unreadable:
        print(f"{path}: unreadable ({reason})", file=sys.stderr)
    if unreadable:
        raise RuntimeFailure(f"{len(unreadable)} of {count} images could not be read (listed above)")


def recipes() -> None:
    """The known dataset recipes: where to get each source, its layout, licence."""
    from engine.data.layouts import load_recipe, recipe_names

    for recipe_name in recipe_names():
        r = load_recipe(recipe_name)
        console.print(f"[bold]{r.name}[/bold]: {r.title}", highlight=False)
        for label, value in (("get it", r.url), ("layout", r.layout), ("classes", r.classes),
                             ("licence", r.licence), ("note", r.notes)):
            if value:
                line(f"  {label}: {value}")
