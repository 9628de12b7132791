"""engine bench: the timing statistics, the OOM path, settings, and a tiny real
bench of every mode against the paper's stack writing valid JSON and a plot."""

from __future__ import annotations

import json
import math

import pytest
import tensorflow as tf
from typer.testing import CliRunner

import factories
from engine import machine, training
from engine.bench import engine_stack, protocol, report as bench_report, runner
from engine.data import synthetic
from engine.training import numerics
from engine.cli import app
from engine.config import BenchConfig
from engine.errors import UserError


# --- statistics -------------------------------------------------------------

def test_outlier_flag_on_hand_made_timings():
    assert protocol.flag_outliers([1.0, 1.02, 0.98, 2.5], 1.5) == [False, False, False, True]
    assert protocol.flag_outliers([1.0, 1.0, 0.5], 1.5) == [False, False, True]  # too fast is flagged too
    assert protocol.flag_outliers([1.0, 1.2, 1.4], 1.5) == [False, False, False]
    # Against the median of all: one wild repeat of three cannot move it.
    assert protocol.flag_outliers([2.0, 1.0, 1.0], 1.5) == [True, False, False]
    assert protocol.flag_outliers([3.0, 1.0, 1.0], 1.5) == [True, False, False]
    assert protocol.flag_outliers([1.0, 1.0], 1.5) == [False, False]  # too few to judge


def test_summary_leaves_outliers_out():
    stats = protocol.summarize([1.0, 1.0, 2.0, 0.8], images=10, ratio=1.5)
    assert stats["outliers"] == [2]
    assert stats["rates"] == [10.0, 10.0, 5.0, 12.5]
    assert stats["img_s"] == 10.0  # median of 10, 10, 12.5
    assert stats["img_s_min"] == 10.0 and stats["img_s_max"] == 12.5
    assert stats["spread_pct"] == pytest.approx(25.0)


def test_steps_and_epochs_per_repeat():
    assert protocol.steps_for(40, 15) == 3
    assert protocol.steps_for(40, 64) == 2  # at least two steps
    manifest = {"splits": {"train": {"count": 500}}}
    assert protocol.epochs_for(8, 5, manifest) == 1 + 1
    assert protocol.epochs_for(150, 5, manifest) == 2 + 1


# --- settings ---------------------------------------------------------------

@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(machine, "gpus", lambda: [])
    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})


def test_auto_expands_to_what_it_could_pick_on_a_bf16_cpu(bf16_cpu):
    cfg = BenchConfig(precisions=("float32", "auto"), xlas=("off", "auto"))
    measured, pool = runner.settings(cfg)
    assert measured == [("float32", "off"), ("float32", "on"), ("mixed_bfloat16", "off"), ("mixed_bfloat16", "on")]
    assert pool == measured
    measured, pool = runner.settings(BenchConfig(precisions=("auto",), xlas=("off",)))
    assert measured == pool == [("float32", "off"), ("mixed_bfloat16", "off")]


def test_without_auto_every_setting_competes(monkeypatch):
    monkeypatch.setattr(machine, "gpus", lambda: [])
    monkeypatch.setattr(machine, "gpu_capabilities", lambda: [])
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2"})
    measured, pool = runner.settings(BenchConfig(precisions=("float32", "mixed_bfloat16"), xlas=("on",)))
    assert measured == pool == [("float32", "on"), ("mixed_bfloat16", "on")]
    # No bf16 instructions: auto can only pick float32.
    assert runner.settings(BenchConfig(precisions=("auto",), xlas=("off",)))[0] == [("float32", "off")]


@pytest.mark.parametrize("field, value", [("precisions", ("float64",)), ("xlas", ("maybe",)),
                                          ("modes", ("train",)), ("batch_sizes", (0,)), ("repeats", 2),
                                          ("outlier_ratio", 1.0), ("image_size", 64)])
def test_bad_config_is_a_one_line_error(field, value):
    with pytest.raises(UserError) as err:
        BenchConfig(**{field: value}).validate()
    assert "\n" not in str(err.value)


# --- the OOM path and the report, on simulated measurements -----------------

def fake_measures(oom_batch: int) -> list[protocol.Measure]:
    def runs(batch):
        def prepare():
            def timed():
                if batch >= oom_batch:
                    raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nmore")
            return timed
        return prepare
    rows = []
    for batch in (4, 8, 16):
        for precision in ("float32", "mixed_bfloat16"):
            for mode in ("step", "e2e"):
                rows.append(protocol.Measure(mode, batch, protocol.ENGINE, precision, "off", 4 * batch, runs(batch)))
        rows.append(protocol.Measure("e2e", batch, protocol.PAPER, "float32", "off", 4 * batch, runs(batch)))
    return rows


def test_out_of_memory_becomes_a_row_and_the_bench_goes_on(tmp_path):
    measures = fake_measures(oom_batch=16)
    done = []
    protocol.run_measures(measures, repeats=3, on_progress=done.append)
    assert len(done) == len(measures) * 4
    for m in measures:
        if m.batch == 16:
            assert m.status == "OOM" and m.seconds == [] and m.prepare is None
            assert m.error.startswith("ResourceExhaustedError: OOM when allocating tensor")
        else:
            assert m.status == "ok" and len(m.seconds) == 3 and m.compile_s is not None
    # Hand-made timings: float32 twice as slow as bf16, the paper's stack 3x slower than bf16.
    for m in measures:
        if m.status == "ok":
            per_image = 0.1 if m.stack == protocol.PAPER else 0.066 if m.precision == "float32" else 0.033
            m.seconds = [per_image * m.images] * 3
            m.compile_s = 1.0 + per_image * m.images
    cfg = BenchConfig(batch_sizes=(4, 8, 16), out=tmp_path)
    peaks = {"float32": {"gflops": 100.0, "basis": "test"}, "mixed_bfloat16": {"gflops": 200.0, "basis": "test"}}
    pool = [("float32", "off"), ("mixed_bfloat16", "off")]
    manifest = {"image_size": [75, 75], "channels": 1, "splits": {"train": {"count": 100}}}
    result = bench_report.assemble(cfg, manifest, measures, {}, pool, macs=10**9, peaks=peaks, seconds=1.0)
    oom = [r for r in result["rows"] if r["status"] == "OOM"]
    assert len(oom) == 5 and all(r["batch"] == 16 for r in oom)
    fast = next(r for r in result["rows"] if r["mode"] == "e2e" and r["batch"] == 4
                and r["precision"] == "mixed_bfloat16")
    assert fast["chosen"] and fast["img_s"] == pytest.approx(1 / 0.033)
    assert fast["compile_s"] == pytest.approx(1.0)
    assert fast["gflop_s"] == pytest.approx(6.0 / 0.033)  # 6 GFLOP per image per step
    assert fast["pct_peak"] == pytest.approx(100 * 6.0 / 0.033 / 200)
    ratio = next(t for t in result["targets"] if t["what"].startswith("e2e vs paper's, batch 4"))
    assert ratio["value"] == pytest.approx(0.1 / 0.033) and ratio["met"] and ratio["grade"] == "goal"
    assert result["suggestion"]["precision"] == "mixed_bfloat16"
    assert result["suggestion"]["largest_batch"] == 8 and result["suggestion"]["oom_batch"] == 16
    bench_report.write(result, tmp_path)
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["mode"] in ("step", "e2e")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_suggestion_when_everything_ran_out_of_memory():
    rows = [{"stack": "engine", "mode": "step", "batch": 64, "setting": "float32/off", "status": "OOM"}]
    assert "every batch size ran out of memory" in bench_report.suggestion(rows, (64,))["text"]


def test_bench_choice_feeds_trainings_auto(bf16_cpu):
    # Its own key: the cache folder is shared by the session's tests.
    cfg = BenchConfig(batch_sizes=(5,), precisions=("auto",), xlas=("auto",), modes=("step",), model="TinyCNN",
                      image_size=96)
    rows = [{"stack": "engine", "mode": "step", "batch": 5, "setting": s, "status": "ok", "img_s": rate}
            for s, rate in (("float32/off", 9.0), ("float32/on", 7.0), ("mixed_bfloat16/off", 15.0),
                            ("mixed_bfloat16/on", 12.0))]
    pool = ["float32/off", "float32/on", "mixed_bfloat16/off", "mixed_bfloat16/on"]
    runner.remember_choice(cfg, {"rows": rows, "compared_from": pool}, channels=1)

    checked = []

    def check_only(precision, xla):
        # The bench timed the steps; training's probe only checks the reduced precision's numerics.
        checked.append((precision, xla))
        return 1.0, [0.7, 0.6, 0.65, 0.6, 0.55, 0.5, 0.52, 0.5]
    shape = training.PaceShape("TinyCNN", 96, 1, 5, "auto", "auto")
    precision, xla = numerics.resolve("auto", "auto", check_only, shape)
    assert (precision.value, xla.value) == ("mixed_bfloat16", "off")
    assert "engine bench" in precision.reason and "mixed_bfloat16/off 15.00" in precision.reason
    assert checked == [("float32", "off"), ("mixed_bfloat16", "off"), ("mixed_bfloat16", "on")]
    # Checked once, it is what a time estimate (no probe) assumes too.
    assert numerics.resolve("auto", "auto", None, shape)[0].value == "mixed_bfloat16"


# --- a tiny real bench --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    return factories.synthetic_records(tmp_path_factory.mktemp("bench"), {"train": 24, "val": 4, "test": 4}, 32,
                                       patient_pattern=synthetic.FILENAME_PATTERN)


@pytest.fixture(scope="module")
def tiny_bench(tiny_records, tmp_path_factory):
    """Every mode, the engine (float32, no XLA) and the paper's stack, with a
    network both stacks have that traces in a second or two (TinyCNN at 32 px:
    MobileNetV2 took 10-17 s per traced batch shape and stack)."""
    out = tmp_path_factory.mktemp("bench-out")
    cfg = BenchConfig(records=tiny_records, out=out, batch_sizes=(2, 3), image_size=32, precisions=("float32",),
                      xlas=("off",), repeats=3, step_images=4, input_images=16, paper_stack=True, model="TinyCNN")
    return cfg, runner.run(cfg, quiet=True)


def test_tiny_bench_of_every_mode_writes_valid_json(tiny_bench):
    cfg, result = tiny_bench
    written = json.loads((cfg.out / "bench.json").read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    assert {"cpu", "cores", "gpus", "cpu_flags"} <= set(written["machine"])
    assert {"tensorflow", "keras", "tf_keras", "numpy"} <= set(written["versions"])
    kinds = {(r["mode"], r["stack"]) for r in written["rows"]}
    assert kinds == {(m, s) for m in ("input", "step", "e2e") for s in ("engine", "paper")}
    assert len(written["rows"]) == 2 * 6
    for r in written["rows"]:
        assert r["status"] == "ok", json.dumps(r)
        assert math.isfinite(r["img_s"]) and r["img_s"] > 0 and r["img_s_min"] <= r["img_s"] <= r["img_s_max"]
        assert len(r["rates"]) == 3 and r["compile_s"] >= 0 and r["peak_mb"] > 0
        assert r["ms_step"] == pytest.approx(1000 * r["batch"] / r["img_s"])
        if r["mode"] != "input":
            assert r["gflop_s"] == pytest.approx(r["img_s"] * written["train_flops_per_image"] / 1e9)
            assert 0 < r["pct_peak"]
    assert {t["what"].split(",")[0] for t in written["targets"]} == \
        {"input img/s", "input vs paper's", "e2e vs paper's", "e2e / step"}
    assert written["suggestion"]["precision"] == "float32" and written["suggestion"]["largest_batch"] == 3
    assert (cfg.out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    table = (cfg.out / "bench.md").read_text()
    assert table.count("\n| e2e | ") == 4 and "| input vs paper's, batch 2 |" in table
    # The paper's stack read the same images, exported from the records by class.
    exported = sorted(p.parent.name for p in (cfg.out / "paper-images").rglob("*.png"))
    assert len(exported) == 24 and set(exported) == {"covid", "normal"}


def test_dry_run_counts_the_measurements_the_run_made(tiny_bench):
    cfg, result = tiny_bench
    seconds, count = runner.estimate_seconds(cfg)
    assert count == len(result["rows"]) and seconds > 0


def test_cli_suggest_reads_the_last_run(tiny_bench):
    cfg, _ = tiny_bench
    out = CliRunner().invoke(app, ["bench", "--suggest", "--out", str(cfg.out)])
    assert out.exit_code == 0, out.output
    assert "fastest: --precision float32 --xla off" in out.output


def test_cli_input_only_without_the_paper_stack(tiny_records, tmp_path):
    out = CliRunner().invoke(app, ["bench", str(tiny_records), "--image-size", "32", "--model", "TinyCNN",
                                   "--mode", "input", "--batch-sizes", "4", "--input-images", "8", "--no-paper-stack",
                                   "--quiet", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["mode"], r["stack"], r["status"]) for r in rows] == [("input", "engine", "ok")]
    assert "input img/s, batch 4" in out.output


def test_cli_size_mismatch_is_one_line(tiny_records, tmp_path):
    out = CliRunner().invoke(app, ["bench", str(tiny_records), "--out", str(tmp_path)])
    assert out.exit_code != 0
    assert "32-px images; pass --image-size 32" in str(out.exception)


def test_an_interrupted_bench_keeps_the_rounds_it_finished(tiny_records, tmp_path, monkeypatch):
    cfg = BenchConfig(records=tiny_records, out=tmp_path, batch_sizes=(4,), image_size=32, model="TinyCNN",
                      modes=("input",), paper_stack=False, input_images=8)
    timed = protocol.time_once
    calls = []

    def interrupted_in_round_two(measure):
        calls.append(measure)
        if len(calls) == 2:
            raise KeyboardInterrupt
        timed(measure)
    monkeypatch.setattr(protocol, "time_once", interrupted_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, quiet=True)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["complete"] is False
    assert [len(r["rates"]) for r in saved["rows"]] == [1]


def test_low_host_memory_skips_as_an_oom_row(monkeypatch):
    monkeypatch.setattr(machine, "available_memory_mb", lambda: 500.0)
    ran = []
    m = protocol.Measure("step", 64, protocol.ENGINE, "float32", "off", 128, lambda: lambda: ran.append(1))
    protocol.run_measures([m], repeats=3)
    assert m.status == "OOM" and not ran
    assert m.error == "HostMemoryLow: skipped: 500 MB of host memory left (< 3,072 MB)"


def test_a_setting_that_cannot_be_built_stays_an_oom_row(monkeypatch, tmp_path):
    def cannot_build(*args):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating the model")
    monkeypatch.setattr(engine_stack, "engine_measures", cannot_build)
    cfg = BenchConfig(batch_sizes=(4, 8), modes=("step", "e2e"), out=tmp_path)
    measures, _ = runner.build_measures(cfg, tmp_path, {}, [("float32", "off")], None, lambda s: None)
    protocol.run_measures(measures, repeats=3)
    assert [(m.mode, m.batch, m.status) for m in measures] == \
        [("step", 4, "OOM"), ("e2e", 4, "OOM"), ("step", 8, "OOM"), ("e2e", 8, "OOM")]
    assert all(m.error.startswith("ResourceExhaustedError: OOM when allocating the model") for m in measures)


# --- the study bench ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tiny_records, tmp_path_factory):
    """Both stacks through a whole scaled study: batch 4 and batch 8, one
    learning rate, 2 epochs, TinyCNN at 32 px (few trials: each paper-stack
    trial builds and traces a fresh model)."""
    from engine.bench import study

    out = tmp_path_factory.mktemp("study-out")
    cfg = BenchConfig(records=tiny_records, out=out, modes=("study",), batch_sizes=(4, 8), lrs=(1e-3,),
                      epochs=2, image_size=32, precisions=("float32",), xlas=("off",), model="TinyCNN").validate()
    return cfg, study.run(cfg, quiet=True)


def test_study_bench_times_both_stacks_and_projects_the_paper_study(tiny_study):
    cfg, result = tiny_study
    assert result["complete"] and result["train_images"] == 24 and result["val_images"] == 4
    assert [(t["stack"], t["lr"], t["batch"]) for t in result["trials"]] == [
        ("engine", 1e-3, 4), ("paper", 1e-3, 4), ("engine", 1e-3, 8), ("paper", 1e-3, 8)]
    for t in result["trials"]:  # the split adds up to the wall time
        assert t["train"] > 0 and t["val"] > 0 and t["saves"] >= 0
        assert t["train"] + t["val"] + t["saves"] + t["rest"] == pytest.approx(t["seconds"])
    engine_s = sum(t["seconds"] for t in result["trials"] if t["stack"] == "engine") + result["report_seconds"]
    paper_s = sum(t["seconds"] for t in result["trials"] if t["stack"] == "paper")
    assert result["study_seconds"] == pytest.approx({"engine": engine_s, "paper": paper_s})
    assert result["study_ratio"] == pytest.approx(paper_s / engine_s)
    for row in result["per_batch"]:
        assert row["engine"]["train_img_s"] > 0 and row["paper"]["val_img_s"] > 0
        assert row["loop"]["e2e_img_s"] > 0 and row["loop"]["eval_img_s"] > 0 and row["loop"]["ratio"] > 0
    projection = result["projection"]
    assert projection["engine"]["runs"] == projection["paper"]["runs"] == 6 + 1  # 6 paper lrs, batch 8 at 1e-4
    assert projection["ratio"] == pytest.approx(projection["paper"]["seconds"] / projection["engine"]["seconds"])
    # The engine went through engine compare's path: run folders, history, saved models, reports; a
    # finished trial keeps no resume checkpoint (engine compare's default).
    for sweep in ("engine-lr", "engine-batch"):
        folder = cfg.out / "study" / sweep
        assert (folder / "report.md").is_file() and (folder / "sweep.json").is_file()
        for trial in (folder / "trials").iterdir():
            if trial.is_dir():
                assert (trial / "history.csv").is_file() and (trial / "last.keras").is_file()
                assert json.loads((trial / "metrics.json").read_text())["status"] == "done"
                assert not (trial / "ckpt").exists()
    assert len(list((cfg.out / "study" / "paper").rglob("model.h5"))) == 2
    written = json.loads((cfg.out / "bench.json").read_text())
    assert written["kind"] == "study" and written["projection"] == projection
    assert "| engine | 0.001 | 4 |" in (cfg.out / "bench.md").read_text()


def test_study_dry_run_fits_its_budget(tmp_path):
    from engine.bench import study

    cfg = BenchConfig(out=tmp_path, modes=("study",)).validate()
    train, val = study.sized(cfg, None)
    assert val == train // 5 and train in study.SIZES
    assert study.estimate_seconds(cfg, train, val) <= 30 * 60 or train == study.SIZES[-1]
    if train < 500:  # the next size up would not have fitted
        bigger = study.SIZES[study.SIZES.index(train) - 1]
        assert study.estimate_seconds(cfg, bigger, bigger // 5) > 30 * 60
    assert "trials per stack" in study.dry_run_text(cfg)


@pytest.mark.parametrize("changes,message", [({"modes": ("study", "e2e")}, "on its own"),
                                             ({"modes": ("study",), "epochs": 1}, "at least|>= 2"),
                                             ({"modes": ("study",), "train_images": 10}, "two batches")])
def test_study_bad_config_is_one_line(changes, message):
    with pytest.raises(UserError, match=message):
        BenchConfig(**changes).validate()


def test_study_projection_exact_on_hand_made_trials():
    from engine.bench import study

    def trial(stack, seconds, trains, val, save, final):
        return {"stack": stack, "lr": 1e-4, "batch": 5, "seconds": seconds, "final_save_seconds": final,
                "train_images": 50, "val_images": 10,
                "epochs": [{"train_seconds": t, "val_seconds": val, "save_seconds": save} for t in trains]}
    first = trial("engine", 63.0, [40.0, 10.0], 2.0, 0.5, 3.0)  # compiles: 30 s over a steady epoch
    reuse = trial("engine", 35.0, [12.0, 10.0], 2.0, 0.5, 3.0)  # the same compiled step: 2 s over
    paper = trial("paper", 83.0, [50.0, 20.0], 4.0, 0.0, 2.0)
    assert study.split_time(first) == {"seconds": 63.0, "train": 50.0, "val": 4.0, "saves": 4.0, "rest": 5.0}
    rates = study.rates([first, reuse])
    assert (rates["train_img_s"], rates["val_img_s"], rates["save_s"], rates["first_extra_s"]) == (5.0, 5.0, 0.5,
                                                                                                 [30.0, 2.0])
    # 6 runs x (20 x (500 / 5 + 100 / 5 + 0.5) + 8 fixed), one compile (30) and five reuses (2 each).
    assert study.project([first, reuse, paper], "engine", 5) == {"runs": 6, "seconds": 6 * 2418.0 + 30 + 5 * 2}
    # The paper's stack builds a fresh model every trial: each pays its first-epoch excess.
    assert study.project([first, reuse, paper], "paper", 5) == {"runs": 6, "seconds": 6 * (4805.0 + 30)}
