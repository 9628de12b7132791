"""What ``engine bench`` measured, as rows, ratios to the paper's stack, targets
met or missed, a suggestion, and ``bench.json`` / ``bench.png`` / rich tables."""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine import machine
from engine.bench import flops
from engine.bench.protocol import ENGINE, PAPER, Measure, summarize
from engine.config import BenchConfig
from engine.io import atomic_json, atomic_write, save_figure

# Targets on the 2-core reference CPU (from the issue that asked for the bench).
INPUT_RATIO, INPUT_RATE = 15.0, 1500.0
E2E_RATIO, E2E_STRETCH, E2E_GOAL = 1.3, 1.5, 2.0
E2E_OF_STEP = 0.95
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
         "amx_bf16")


def row(m: Measure, cfg: BenchConfig, train_flops: float, peaks: dict) -> dict:
    out = {"mode": m.mode, "batch": m.batch, "stack": m.stack, "precision": m.precision, "xla": m.xla,
           "setting": m.setting, "status": m.status, "error": m.error, "images_per_repeat": m.images,
           "compile_s": None if m.compile_s is None else round(m.compile_s, 2), "peak_mb": round(m.peak_mb),
           "device_peak_mb": None if m.device_peak_mb is None else round(m.device_peak_mb), "chosen": False}
    if m.status == "ok" and not m.seconds:
        out["status"] = "no repeats"
    if out["status"] != "ok":
        return out
    stats = summarize(m.seconds, m.images, cfg.outlier_ratio)
    out.update(stats)
    out["ms_step"] = 1000 * m.batch / stats["img_s"]
    # The first call ran one repeat's work plus tracing/compiling (and, for
    # input, the first decode into the cache).
    out["compile_s"] = round(max(0.0, m.compile_s - m.images / stats["img_s"]), 2)
    if m.mode != "input":
        out["gflop_s"] = stats["img_s"] * train_flops / 1e9
        peak = peaks.get(m.precision)
        out["pct_peak"] = flops.percent_of_peak(stats["img_s"], train_flops, peak["gflops"] if peak else None)
    return out


def mark_chosen(rows: list[dict], pool: list[str], batches) -> None:
    """Marks, per batch, the engine setting compared with the paper's stack: the
    one ``auto`` picks, i.e. the fastest of its candidates (on a GPU there is one,
    chosen by rule), or the fastest measured when ``auto`` was not asked for;
    judged end to end when measured."""
    for batch in batches:
        for mode in ("e2e", "step"):
            candidates = [r for r in rows if r["stack"] == ENGINE and r["batch"] == batch and r["mode"] == mode
                          and r["status"] == "ok" and r["setting"] in pool]
            if candidates:
                best = max(candidates, key=lambda r: r["img_s"])["setting"]
                for r in rows:
                    if r["stack"] == ENGINE and r["batch"] == batch and r["setting"] == best:
                        r["chosen"] = True
                break


def find(rows, **keys) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in keys.items()) and r["status"] == "ok":
            return r
    return None


def ratios_and_targets(rows: list[dict], batches) -> tuple[list[dict], list[dict]]:
    ratios, targets = [], []
    for batch in batches:
        engine_in, paper_in = find(rows, mode="input", batch=batch, stack=ENGINE), \
            find(rows, mode="input", batch=batch, stack=PAPER)
        if engine_in:
            targets.append({"what": f"input img/s, batch {batch}", "value": engine_in["img_s"], "target": INPUT_RATE,
                            "unit": "img/s", "met": engine_in["img_s"] >= INPUT_RATE})
        if engine_in and paper_in:
            value = engine_in["img_s"] / paper_in["img_s"]
            ratios.append({"what": "input / paper's input", "batch": batch, "setting": "-", "value": value})
            targets.append({"what": f"input vs paper's, batch {batch}", "value": value, "target": INPUT_RATIO,
                            "unit": "x", "met": value >= INPUT_RATIO})
        paper_e2e = find(rows, mode="e2e", batch=batch, stack=PAPER)
        for r in rows:
            if r["stack"] != ENGINE or r["batch"] != batch or r["mode"] != "e2e" or r["status"] != "ok":
                continue
            if paper_e2e:
                value = r["img_s"] / paper_e2e["img_s"]
                ratios.append({"what": "e2e / paper's e2e", "batch": batch, "setting": r["setting"], "value": value,
                               "chosen": r["chosen"]})
                if r["chosen"]:
                    grade = "goal" if value >= E2E_GOAL else "stretch" if value >= E2E_STRETCH else \
                        "target" if value >= E2E_RATIO else "missed"
                    targets.append({"what": f"e2e vs paper's, batch {batch} ({r['setting']})", "value": value,
                                    "target": E2E_RATIO, "unit": "x", "met": value >= E2E_RATIO, "grade": grade})
            step = find(rows, mode="step", batch=batch, stack=ENGINE, setting=r["setting"])
            if step:
                value = r["img_s"] / step["img_s"]
                ratios.append({"what": "e2e / step", "batch": batch, "setting": r["setting"], "value": value,
                               "chosen": r["chosen"]})
                if r["chosen"]:
                    targets.append({"what": f"e2e / step, batch {batch} ({r['setting']})", "value": value,
                                    "target": E2E_OF_STEP, "unit": "%", "met": value >= E2E_OF_STEP})
    return ratios, targets


def suggestion(rows: list[dict], batches) -> dict:
    """The fastest precision/XLA setting (geometric mean of img/s over the batch
    sizes it ran, end to end when measured) and the largest batch that fits."""
    engine_rows = [r for r in rows if r["stack"] == ENGINE and r["mode"] in ("e2e", "step")]
    if not engine_rows:
        return {"text": "no training measurement: nothing to suggest"}
    mode = "e2e" if any(r["mode"] == "e2e" and r["status"] == "ok" for r in engine_rows) else "step"
    by_setting: dict[str, list[float]] = {}
    for r in engine_rows:
        if r["mode"] == mode and r["status"] == "ok":
            by_setting.setdefault(r["setting"], []).append(r["img_s"])
    if not by_setting:
        oom = sorted(r["batch"] for r in engine_rows if r["status"] == "OOM")
        if oom:
            return {"text": f"every batch size ran out of memory (smallest tried {oom[0]}): try smaller ones",
                    "largest_batch": None, "oom_batch": oom[0]}
        return {"text": "every training measurement failed: nothing to suggest"}
    # Scored over the batch sizes every setting completed, so that a setting
    # which ran out of memory at the large (faster) ones is not favoured.
    done = {s: {r["batch"] for r in engine_rows if r["setting"] == s and r["mode"] == mode and r["status"] == "ok"}
            for s in by_setting}
    common = set.intersection(*done.values())
    score = {}
    for s in by_setting:
        rates = [r["img_s"] for r in engine_rows if r["setting"] == s and r["mode"] == mode and r["status"] == "ok"
                 and (not common or r["batch"] in common)]
        score[s] = math.exp(statistics.fmean(math.log(v) for v in rates))
    best = max(score, key=score.get)
    mine = [r for r in engine_rows if r["setting"] == best and r["mode"] == mode]
    fits = sorted(r["batch"] for r in mine if r["status"] == "ok")
    oom = sorted(r["batch"] for r in mine if r["status"] == "OOM")
    largest = max(fits) if fits else None
    precision, xla = best.split("/")
    if oom:
        limit = f"largest batch that fits: {largest} (batch {oom[0]} ran out of memory)"
    else:
        limit = f"largest batch that fits: at least {largest} (nothing ran out of memory; add larger " \
                "--batch-sizes to find the limit)"
    fastest_batch = max((r for r in engine_rows if r["setting"] == best and r["mode"] == mode
                         and r["status"] == "ok"), key=lambda r: r["img_s"])
    text = (f"fastest: --precision {precision} --xla {xla} ({score[best]:.1f} img/s {mode}, geometric mean over "
            f"batch sizes; best at batch {fastest_batch['batch']}: {fastest_batch['img_s']:.1f} img/s); {limit}")
    return {"precision": precision, "xla": xla, "img_s": score[best], "mode": mode, "largest_batch": largest,
            "oom_batch": oom[0] if oom else None, "text": text}


def versions() -> dict:
    import keras
    import numpy
    import tensorflow as tf

    from engine import __version__
    out = {"engine": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
           "numpy": numpy.__version__, "python": platform.python_version()}
    try:
        import tf_keras
        out["tf_keras"] = tf_keras.__version__
    except ImportError:
        pass
    return out


def assemble(cfg: BenchConfig, manifest: dict, measures: list[Measure], build_s: dict, compared_from, macs: int,
             peaks: dict, seconds: float, complete: bool = True) -> dict:
    train_flops = flops.train_flops_per_image(macs)
    rows = [row(m, cfg, train_flops, peaks) for m in measures]
    pool = [f"{p}/{x}" for p, x in compared_from]
    mark_chosen(rows, pool, cfg.batch_sizes)
    ratios, targets = ratios_and_targets(rows, cfg.batch_sizes)
    described = machine.describe()
    described["cpu_flags"] = sorted(machine.cpu_flags() & set(FLAGS))
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": "engine " + " ".join(sys.argv[1:]),
            "machine": described, "versions": versions(), "config": cfg.to_json(),
            "records": {"image_size": manifest["image_size"][0], "channels": manifest["channels"],
                        "train_images": manifest["splits"]["train"]["count"]},
            "macs_per_image": macs, "train_flops_per_image": train_flops, "peaks": peaks,
            "build_s": {k: round(v, 1) for k, v in build_s.items()}, "compared_from": pool, "rows": rows,
            "ratios": ratios, "targets": targets, "suggestion": suggestion(rows, cfg.batch_sizes),
            "seconds": round(seconds, 1), "complete": complete}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(out / "bench.json", result)
    atomic_write(out / "bench.md", markdown(result))
    plot(result, out / "bench.png")


def markdown(result: dict) -> str:
    """The rows and targets as Markdown tables, for a report or a results file."""
    m = result["machine"]
    lines = [f"# engine bench, {result['date']}", "",
             f"{result['config']['model']} at {result['records']['image_size']} px; {m['cpu']}, {m['cores']} cores"
             + "".join(f", {g['name']}" for g in m["gpus"])
             + f"; TensorFlow {result['versions']['tensorflow']}, Keras {result['versions']['keras']}"
             + (f", tf_keras {result['versions']['tf_keras']}" if "tf_keras" in result["versions"] else "")
             + f"; {result['seconds'] / 60:.1f} min" + ("" if result.get("complete", True) else " (interrupted)"),
             "", "img/s: median (min-max) of the kept repeats; *: the engine setting compared with the paper's stack.",
             "", "| mode | batch | stack | setting | img/s | ms/step | compile s | GFLOP/s | % peak | peak MB"
             + (" (host / GPU)" if m["gpus"] else "") + " | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {"input": 0, "step": 1, "e2e": 2}
    for r in sorted(result["rows"], key=lambda r: (order[r["mode"]], r["batch"], r["stack"] != PAPER,
                                                   r["setting"])):
        setting = ("* " if r["chosen"] else "") + r["setting"]
        if r["status"] != "ok":
            lines.append(f"| {r['mode']} | {r['batch']} | {r['stack']} | {setting} | {r['status']} | | | | | "
                         f"{memory(r)} | {r['error'][:60]} |")
            continue
        note = f"{len(r['outliers'])} outlier(s) left out" if r["outliers"] else ""
        lines.append(f"| {r['mode']} | {r['batch']} | {r['stack']} | {setting} | {r['img_s']:,.1f} "
                     f"({r['img_s_min']:,.1f}-{r['img_s_max']:,.1f}) | {fmt(r['ms_step'], ',.0f')} | "
                     f"{fmt(r['compile_s'])} | {fmt(r.get('gflop_s'), ',.0f')} | {fmt(r.get('pct_peak'), '.0f')} | "
                     f"{memory(r)} | {note} |")
    if result["targets"]:
        lines += ["", "| against the paper's stack | value | target | |", "|---|---|---|---|"]
        for t in result["targets"]:
            value, goal = target_text(t)
            lines.append(f"| {t['what']} | {value} | {goal} | {'met' if t['met'] else 'missed'}"
                         f"{' (' + t['grade'] + ')' if t.get('grade') else ''} |")
    lines += ["", f"Suggestion: {result['suggestion']['text']}", ""]
    return "\n".join(lines)


def target_text(t: dict) -> tuple[str, str]:
    shown = {"x": "{:.2f}x", "%": "{:.0%}", "img/s": "{:,.0f} img/s"}[t["unit"]]
    return shown.format(t["value"]), "≥ " + shown.format(t["target"])


def label(r: dict) -> str:
    return "paper's stack (tf_keras float32)" if r["stack"] == PAPER else \
        "engine input pipeline" if r["mode"] == "input" else f"engine {r['setting']}"


def plot(result: dict, path: Path) -> None:
    """img/s against batch size, one panel per mode, one line per setting, the
    paper's stack dashed; bars span the min-max of the kept repeats."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("input", "step", "e2e") if any(r["mode"] == m for r in result["rows"])]
    titles = {"input": "input pipeline", "step": "training step (data on device)", "e2e": "end to end"}
    fig, axes = plt.subplots(1, len(modes), figsize=(4.6 * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        for name in dict.fromkeys(label(r) for r in rows):
            mine = sorted((r for r in rows if label(r) == name), key=lambda r: r["batch"])
            ok = [r for r in mine if r["status"] == "ok"]
            dashed = mine[0]["stack"] == PAPER
            if ok:
                xs, ys = [r["batch"] for r in ok], [r["img_s"] for r in ok]
                err = [[y - r["img_s_min"] for y, r in zip(ys, ok)], [r["img_s_max"] - y for y, r in zip(ys, ok)]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name,
                            linestyle="--" if dashed else "-", color="black" if dashed else None)
            for r in mine:
                if r["status"] != "ok":
                    ax.annotate(r["status"], (r["batch"], 0), xytext=(0, 4), textcoords="offset points",
                                ha="center", color="red", fontsize=8)
        ax.set_title(titles[mode])
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_xticks(sorted({r["batch"] for r in rows}))
        if mode == "input":
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    size = result["records"]["image_size"]
    fig.suptitle(f"{result['config']['model']} at {size} px on {result['machine']['cpu']}"
                 f"{' + ' + result['machine']['gpus'][0]['name'] if result['machine']['gpus'] else ''}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def memory(r: dict) -> str:
    """Peak host memory of the process, and the GPU's when there is one (MB)."""
    host = fmt(r["peak_mb"], ",.0f")
    return host if r.get("device_peak_mb") is None else f"{host} / {r['device_peak_mb']:,.0f}"


def fmt(value, spec: str = ",.1f") -> str:
    return "" if value is None else format(value, spec)


SHORT = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16", "-": "-"}


def short_setting(r: dict) -> str:
    if r["stack"] == PAPER:
        return "paper" if r["mode"] == "input" else "paper fp32"
    if r["mode"] == "input":
        return "engine"
    name = f"{SHORT.get(r['precision'], r['precision'])} xla {r['xla']}"
    return ("* " if r["chosen"] else "") + name


def print_tables(result: dict, console: Console) -> None:
    """The rows, the ratios and targets, and the suggestion."""
    if not console.is_terminal:
        # A log file has no width: rich would wrap the table at 80 columns.
        console = Console(file=console.file, width=120)
    table = Table(title=f"engine bench: {result['config']['model']} at {result['records']['image_size']} px, "
                        f"{result['machine']['cpu']}, {result['seconds'] / 60:.1f} min", title_justify="left")
    for name in ("mode", "batch", "setting", "img/s", "±%", "ms/step", "compile s", "GFLOP/s", "% peak",
                 "peak MB" + (" host/GPU" if result["machine"]["gpus"] else ""), "note"):
        table.add_column(name, justify="left" if name in ("mode", "setting", "note") else "right")
    order = {"input": 0, "step": 1, "e2e": 2}
    for r in sorted(result["rows"], key=lambda r: (order[r["mode"]], r["batch"], r["stack"] != PAPER,
                                                   r["setting"])):
        if r["status"] != "ok":
            table.add_row(r["mode"], str(r["batch"]), short_setting(r), f"[red]{r['status']}[/red]", "", "", "",
                          "", "", memory(r), r["error"][:40])
            continue
        spread = f"{r['spread_pct']:.0f}"
        note = f"{len(r['outliers'])} outlier" if r["outliers"] else ""
        table.add_row(r["mode"], str(r["batch"]), short_setting(r), fmt(r["img_s"], ",.1f"), spread,
                      fmt(r["ms_step"], ",.0f"), fmt(r["compile_s"]), fmt(r.get("gflop_s"), ",.0f"),
                      fmt(r.get("pct_peak"), ".0f"), memory(r), note)
    console.print(table)
    console.print("img/s: median of the kept repeats; ±%: their max-min spread; *: the engine setting "
                  "compared with the paper's stack", highlight=False)
    if result["targets"]:
        targets = Table(title="against the paper's stack (ratios from this run)")
        for name in ("measure", "value", "target", ""):
            targets.add_column(name)
        for t in result["targets"]:
            value, goal = target_text(t)
            mark = "[green]met[/green]" if t["met"] else "[red]missed[/red]"
            targets.add_row(t["what"], value, goal, mark + (f" ({t['grade']})" if t.get("grade") else ""))
        console.print(targets)
    if any(r["mode"] != "input" for r in result["rows"]):
        peaks = [f"{p}: {v['gflops']:,.0f} GFLOP/s ({v['basis']})" for p, v in result["peaks"].items() if v]
        console.print(f"{result['macs_per_image'] / 1e9:.2f} G multiply-adds per image forward; "
                      f"{result['train_flops_per_image'] / 1e9:.1f} GFLOP per image per training step. "
                      + ("Peak " + "; ".join(peaks) if peaks else "Peak unknown for this device."),
                      highlight=False, soft_wrap=True)
    console.print(f"suggestion: {result['suggestion']['text']}", highlight=False, soft_wrap=True)
