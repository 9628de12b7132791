"""The time estimator: measured rates remembered per machine, scaled to other
shapes, and the run-time formula (exact values)."""

import json
from dataclasses import replace

import pytest

from engine.io import cache_dir
from engine.training import pace
from engine.training.evaluation import eval_batch_size


def shape(**changes):
    base = dict(model="InceptionV3", image_size=96, channels=1, batch=8, precision="float32", xla="off")
    base.update(changes)
    return pace.Shape(**base)


def test_measured_rates_are_used_as_they_are():
    pace.record(shape(), train_img_s=12.0, eval_img_s=40.0, first_step_s=30.0, save_s=0.5, source="test")
    found = pace.estimate(shape())
    assert (found.train_img_s, found.eval_img_s, found.first_step_s, found.save_s) == (12.0, 40.0, 30.0, 0.5)
    assert found.basis.startswith("measured here")
    # A later record of one rate keeps the others.
    pace.record(shape(), train_img_s=10.0)
    assert pace.estimate(shape()).eval_img_s == 40.0 and pace.estimate(shape()).train_img_s == 10.0


def test_another_size_is_scaled_by_area_and_other_numerics_are_not_borrowed():
    pace.record(shape(image_size=150, batch=4, precision="mixed_bfloat16"), train_img_s=20.0, eval_img_s=60.0)
    scaled = pace.estimate(shape(image_size=200, batch=4, precision="mixed_bfloat16"))
    factor = (150 / 200) ** (2 * pace.AREA_EXPONENT)
    assert scaled.train_img_s == pytest.approx(20.0 * factor) and scaled.eval_img_s == pytest.approx(60.0 * factor)
    assert "scaled from a measurement at 150 px" in scaled.basis
    # float32 at that size was never measured: not borrowed from bf16.
    assert "scaled" not in pace.estimate(shape(image_size=200, batch=4, precision="float32", xla="on")).basis
    # Twice the side is too far for the area rule: the per-kind rate instead.
    assert "scaled" not in pace.estimate(shape(image_size=300, batch=4, precision="mixed_bfloat16")).basis


def test_nothing_measured_gives_a_rough_rate_said_to_be_rough():
    found = pace.estimate(shape(model="ResNet50", image_size=224, xla="on"))
    assert found.basis == "a rough rate for this kind of CPU" and found.train_img_s > 0
    assert found.eval_img_s == pytest.approx(3 * found.train_img_s)


def test_run_seconds_formula():
    rates = pace.Pace(train_img_s=10.0, eval_img_s=50.0, first_step_s=20.0, save_s=1.0, basis="given")
    # 3 epochs x (48 trained of 50 at batch 8 / 10 + 100 / 50 + 1) + 20 + (100 + 100) / 50 + 4
    seconds = pace.run_seconds(shape(batch=8), epochs=3, train_images=50, val_images=100, test_images=100,
                               pace=rates)
    assert seconds == pytest.approx(3 * (4.8 + 2.0 + 1.0) + 20.0 + 4.0 + 4.0)
    # Reusing a compiled step: a share of the compiling first step until one was measured.
    assert pace.run_seconds(shape(batch=8), epochs=3, train_images=50, val_images=100, test_images=100,
                            pace=rates, compile_first=False) == pytest.approx(seconds - 20.0 * (1 - 0.06))
    measured = pace.Pace(10.0, 50.0, 20.0, 1.0, "given", reuse_step_s=1.5)
    assert pace.run_seconds(shape(batch=8), epochs=3, train_images=50, val_images=100, test_images=100,
                            pace=measured, compile_first=False) == pytest.approx(seconds - 20.0 + 1.5)


def test_history_rows_become_rates():
    rows = [{"images_per_second": 9.0, "val_seconds": 5.0, "save_seconds": 0.2, "first_step_seconds": 25.0},
            {"images_per_second": 11.0, "val_seconds": 4.0, "save_seconds": 0.4, "first_step_seconds": None},
            {"images_per_second": 10.0, "val_seconds": 4.0, "save_seconds": 0.3, "first_step_seconds": None}]
    pace.record_history(shape(batch=16), rows, val_images=100, source="test")
    found = pace.estimate(shape(batch=16))
    assert (found.train_img_s, found.eval_img_s, found.save_s, found.first_step_s) == (10.0, 25.0, 0.3, 25.0)
    # A run that reused a compiled step records its first step as such, not as a compile.
    rows[0]["first_step_seconds"] = 1.5
    pace.record_history(shape(batch=16), rows, val_images=100, source="test", compiled=False)
    found = pace.estimate(shape(batch=16))
    assert (found.first_step_s, found.reuse_step_s, found.reused_first_step_s) == (25.0, 1.5, 1.5)


def test_unmeasured_process_count_shares_one_process_rates():
    pace.record(shape(batch=4), train_img_s=10.0, eval_img_s=30.0, first_step_s=20.0, source="test")
    two = pace.estimate(shape(batch=4, processes=2))
    assert (two.train_img_s, two.eval_img_s) == pytest.approx((10.0 * pace.PARALLEL_GAIN / 2,
                                                               30.0 * pace.PARALLEL_GAIN / 2))
    assert two.first_step_s == 20.0 and "shared by 2 processes" in two.basis
    pace.record(shape(batch=4, processes=2), train_img_s=7.0, source="test")  # measured: used as it is
    assert pace.estimate(shape(batch=4, processes=2)).train_img_s == 7.0


def test_training_rates_and_probe_results_share_one_entry():
    mine = shape(model="ResNet50", batch=3)
    pace.record(mine, train_img_s=5.0, source="test")
    pace.record_probe(mine, step_img_s=7.0, source="engine bench")
    pace.record_probe(mine, check={"ok": True, "why": "close"}, source="probe")  # a check alone
    entry = json.loads((cache_dir() / pace.PACE_FILE).read_text())[mine.key()]
    assert entry["train_img_s"] == 5.0 and entry["probe"]["step_img_s"] == 7.0 and entry["probe"]["check"]["ok"]
    assert entry["probe"]["source"] == "engine bench"  # the step rate's
    # A time estimate may not know the records' channels: another count's probe serves.
    assert pace.probe_result(replace(mine, channels=3))["step_img_s"] == 7.0
    assert pace.probe_result(replace(mine, xla="on")) is None


@pytest.mark.parametrize("count,train_batch,expected", [(100, 5, 50), (100, 15, 50), (64, 5, 64), (65, 5, 33),
                                                        (500, 8, 63), (10, 5, 10), (100, 80, 50), (1, 5, 1)])
def test_eval_batch_size(count, train_batch, expected):
    assert eval_batch_size(count, train_batch) == expected
