"""Input pipeline throughput: records -> augmented batches, against the paper's pipeline.

Command (2-core x86 reference machine, ~5 minutes):

    python benchmarks/bench_input.py --batch-sizes 5,64 --repeats 3

What it measures, on the embedded synthetic set at 299 px (700 images):

* engine: ``engine.pipeline.dataset`` over the TFRecord shards (decoded
  cache on, as in training) with the paper's augmentation (``engine.augment``,
  XLA-compiled gather warp, 1 channel) placed where training places it on this
  machine (inside tf.data on a CPU-only machine, in the step on a GPU); the
  clock stops once each batch's result is on the host;
* paper: tf_keras ``ImageDataGenerator(rotation_range=20, zoom_range=0.2,
  shear_range=0.2, width_shift_range=0.2, height_shift_range=0.2)
  .flow_from_directory(target_size=(299, 299), interpolation="nearest")``
  over the same PNGs, RGB as the paper's stack loads them.

Both run in one process, interleaved (engine paper engine paper ...), after a
warm-up pass each (compile time and the first-epoch decode reported apart);
medians and min-max over repeats. Target on the reference machine: engine
>= 15x the paper's pipeline and >= 1,500 images/s at batch 5 and 64.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def engine_rate(folder: Path, batch: int, images: int) -> float:
    import tensorflow as tf

    from engine import augment, pipeline, records
    from engine.train import augment_placement

    key = ("engine", batch)
    if key not in CACHE:
        manifest = records.load_manifest(folder)
        fn = augment.make_augment_fn("paper", image_size=manifest["image_size"][0],
                                     channels=manifest["channels"], seed=0)
        # The placement training uses on this machine (see engine.train.augment_placement).
        in_data = augment_placement() == "data"
        ds = pipeline.dataset(folder, "train", batch, training=True, manifest=manifest, end_epoch=30,
                              augment_fn=fn if in_data else None)
        CACHE[key] = (ds, None if in_data else fn)
    ds, fn = CACHE[key]
    # A fresh iterator per repeat: tf.data keeps producing in the background,
    # and batches buffered while the paper's pipeline was timed must not count.
    it = iter(ds)
    next(it)
    steps = max(1, images // batch)
    start = time.perf_counter()
    for step in range(steps):
        x, _ = next(it)
        out = x if fn is None else fn(x, 0, step)
        float(tf.reduce_sum(out[:, 0, 0, 0]))  # wait for the device: result on the host
    return steps * batch / (time.perf_counter() - start)


def paper_rate(src: Path, batch: int, images: int) -> float:
    key = ("paper", batch)
    if key not in CACHE:
        from tf_keras.preprocessing.image import ImageDataGenerator

        generator = ImageDataGenerator(rotation_range=20, zoom_range=0.2, shear_range=0.2,
                                       width_shift_range=0.2, height_shift_range=0.2)
        CACHE[key] = generator.flow_from_directory(str(src / "train"), target_size=(299, 299),
                                                   batch_size=batch, class_mode="binary",
                                                   interpolation="nearest", seed=0)
    flow = CACHE[key]
    steps = max(1, images // batch)
    start = time.perf_counter()
    for _ in range(steps):
        x, _ = next(flow)
        float(x[:, 0, 0, 0].sum())
    return steps * batch / (time.perf_counter() - start)


CACHE: dict = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="5,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1280, help="images per timed repeat (engine)")
    parser.add_argument("--paper-images", type=int, default=160, help="images per timed repeat (paper)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    from engine.embedded import synthetic_records, synthetic_root

    folder, _ = synthetic_records(image_size=299, quiet=True)
    src = synthetic_root() / "images"
    batches = [int(b) for b in args.batch_sizes.split(",")]
    results = {}
    for batch in batches:
        start = time.perf_counter()
        engine_rate(folder, batch, batch * 2)  # trace + XLA compile + first decode
        warm_engine = time.perf_counter() - start
        start = time.perf_counter()
        paper_rate(src, batch, batch * 2)
        warm_paper = time.perf_counter() - start
        rows = {"engine": [], "paper": []}
        for _ in range(args.repeats):
            rows["engine"].append(engine_rate(folder, batch, args.images))
            rows["paper"].append(paper_rate(src, batch, args.paper_images))
        med = {k: statistics.median(v) for k, v in rows.items()}
        results[batch] = {"engine": rows["engine"], "paper": rows["paper"], "warmup_s": [warm_engine, warm_paper],
                          "speedup": med["engine"] / med["paper"]}
        print(f"batch {batch}: engine {med['engine']:.0f} img/s ({min(rows['engine']):.0f}-{max(rows['engine']):.0f}), "
              f"paper {med['paper']:.0f} img/s ({min(rows['paper']):.0f}-{max(rows['paper']):.0f}), "
              f"x{results[batch]['speedup']:.1f}; warm-up {warm_engine:.1f} s / {warm_paper:.1f} s", flush=True)
    print(f"\nTensorFlow {tf.__version__}, {os.cpu_count()} cores")
    print("| batch | engine img/s | paper img/s | ratio |")
    print("|---|---|---|---|")
    for batch, r in results.items():
        print(f"| {batch} | {statistics.median(r['engine']):,.0f} ({min(r['engine']):,.0f}-{max(r['engine']):,.0f}) | "
              f"{statistics.median(r['paper']):,.0f} ({min(r['paper']):,.0f}-{max(r['paper']):,.0f}) | "
              f"{r['speedup']:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
