"""Training throughput of InceptionV3 per batch size, precision and XLA, against the paper's stack.

Command (2-core x86 reference machine, ~20 minutes at the defaults):

    python benchmarks/bench_train.py --batch-sizes 5,10,15 --settings float32/off,mixed_bfloat16/off --repeats 3

What it measures, at 299 px on the embedded synthetic set, weights random
(ImageNet weights cannot be fetched here; they do not change the cost):

* ``step``: the engine's compiled training step (Keras 3, Adam, binary
  cross-entropy) on one batch already in memory: compute only;
* ``e2e``: the engine's real input pipeline (records, decoded cache, the
  paper's augmentation placed as training places it) feeding that step;
* ``paper``: the paper's stack end to end: tf_keras ``ImageDataGenerator``
  (the paper's augmentation, ``flow_from_directory`` over the same PNGs, RGB)
  feeding a float32, non-XLA tf_keras InceptionV3 with the same head;
* ``paper-step``: that tf_keras model on one batch in memory.

Every timed repeat is ``--steps`` training steps; each step's loss is fetched
to the host before the clock moves on. All models are built and warmed up
(traced, compiled) first, with that time reported apart; then the settings
are interleaved repeat by repeat (A B C A B C ...), so machine noise hits them
alike. Medians and min-max over repeats; a repeat more than 1.5x away from
its setting's median is flagged. Peak RSS of the process is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def engine_model(precision: str, xla: str, channels: int, size: int):
    import keras

    from engine import model as model_lib
    from engine.config import ModelConfig
    from engine.train import confusion_metrics

    keras.config.set_dtype_policy(precision)
    try:
        net = model_lib.build(ModelConfig(name="InceptionV3", weights="none", image_size=size, channels=channels,
                                          bn_momentum=0.95))
    finally:
        keras.config.set_dtype_policy("float32")
    net.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy",
                metrics=confusion_metrics(), jit_compile=xla == "on")
    return net


def paper_model(size: int):
    import tf_keras

    base = tf_keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3))
    x = tf_keras.layers.GlobalAveragePooling2D()(base.output)
    x = tf_keras.layers.Dense(256, activation="relu")(x)
    out = tf_keras.layers.Dense(1, activation="sigmoid")(x)
    model = tf_keras.Model(base.input, out)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="5,10,15")
    parser.add_argument("--settings", default="float32/off,mixed_bfloat16/off",
                        help="engine precision/xla pairs, comma-separated")
    parser.add_argument("--modes", default="step,e2e,paper,paper-step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from engine import augment, pipeline, records
    from engine.device import machine
    from engine.embedded import synthetic_records, synthetic_root
    from engine.train import augment_placement

    size = args.image_size
    folder, _ = synthetic_records(image_size=size, quiet=True)
    manifest = records.load_manifest(folder)
    channels = manifest["channels"]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    modes = args.modes.split(",")
    settings = [tuple(s.split("/")) for s in args.settings.split(",")]
    rng = np.random.default_rng(0)

    runners = {}  # name -> (batch -> callable running `steps` steps)
    compile_s = {}
    in_data = augment_placement() == "data"
    augment_fn = augment.make_augment_fn("paper", image_size=size, channels=channels, seed=0)

    for precision, xla in settings:
        start = time.perf_counter()
        net = engine_model(precision, xla, channels, size)
        built = time.perf_counter() - start
        for batch in batches:
            x = tf.constant(rng.uniform(0, 255, (batch, size, size, channels)).astype(np.float32))
            y = tf.constant((np.arange(batch) % 2).astype(np.float32))
            if "step" in modes:
                def step(n, net=net, x=x, y=y):
                    for _ in range(n):
                        float(net.train_on_batch(x, y)[0])
                runners[(f"engine {precision}/{xla}", "step", batch)] = step
            if "e2e" in modes:
                ds = pipeline.dataset(folder, "train", batch, training=True, manifest=manifest, end_epoch=30,
                                      augment_fn=augment_fn if in_data else None)
                it = iter(ds)

                def e2e(n, net=net, it=it, step_counter=[0]):
                    for _ in range(n):
                        images, labels = next(it)
                        if not in_data:
                            images = augment_fn(images, 0, step_counter[0])
                        step_counter[0] += 1
                        float(net.train_on_batch(images, tf.cast(labels, tf.float32))[0])
                runners[(f"engine {precision}/{xla}", "e2e", batch)] = e2e
        compile_s[f"engine {precision}/{xla} build"] = built

    if "paper" in modes or "paper-step" in modes:
        from tf_keras.preprocessing.image import ImageDataGenerator

        start = time.perf_counter()
        model = paper_model(size)
        compile_s["paper build"] = time.perf_counter() - start
        generator = ImageDataGenerator(rotation_range=20, zoom_range=0.2, shear_range=0.2,
                                       width_shift_range=0.2, height_shift_range=0.2)
        for batch in batches:
            if "paper" in modes:
                flow = generator.flow_from_directory(str(synthetic_root() / "images" / "train"),
                                                     target_size=(size, size), batch_size=batch,
                                                     class_mode="binary", interpolation="nearest", seed=0)

                def paper(n, flow=flow):
                    for _ in range(n):
                        images, labels = next(flow)
                        float(model.train_on_batch(images, labels)[0])
                runners[("paper tf_keras float32", "e2e", batch)] = paper
            if "paper-step" in modes:
                px = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
                py = (np.arange(batch) % 2).astype(np.float32)

                def paper_step(n, px=px, py=py):
                    for _ in range(n):
                        float(model.train_on_batch(px, py)[0])
                runners[("paper tf_keras float32", "step", batch)] = paper_step

    # Warm-up: trace and compile every runner once.
    for key, run in runners.items():
        start = time.perf_counter()
        run(2)
        compile_s[" ".join(map(str, key)) + " warm-up"] = time.perf_counter() - start
        print(f"warm-up {key}: {compile_s[' '.join(map(str, key)) + ' warm-up']:.1f} s", flush=True)

    times: dict = {key: [] for key in runners}
    for repeat in range(args.repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            run(args.steps)
            seconds = time.perf_counter() - start
            times[key].append(key[2] * args.steps / seconds)
            print(f"repeat {repeat + 1} {key}: {times[key][-1]:.2f} img/s", flush=True)

    rows = []
    for (name, mode, batch), rates in times.items():
        median = statistics.median(rates)
        flagged = [r for r in rates if r > 1.5 * median or r < median / 1.5]
        rows.append({"setting": name, "mode": mode, "batch": batch, "img_s": median, "min": min(rates),
                     "max": max(rates), "ms_step": 1000 * batch / median, "outliers": flagged, "rates": rates})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{machine()}\npeak RSS {peak_mb:,.0f} MB, augmentation placed in {augment_placement()}")
    print("| setting | mode | batch | img/s median (min-max) | ms/step | outliers |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["batch"], r["mode"], r["setting"])):
        print(f"| {r['setting']} | {r['mode']} | {r['batch']} | {r['img_s']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
              f"{r['ms_step']:.0f} | {len(r['outliers'])} |")
    for batch in batches:
        base = next((r for r in rows if r["setting"].startswith("paper") and r["mode"] == "e2e"
                     and r["batch"] == batch), None)
        if base:
            for r in rows:
                if r["batch"] == batch and r["mode"] == "e2e" and r is not base:
                    print(f"batch {batch}: {r['setting']} e2e / paper e2e = {r['img_s'] / base['img_s']:.2f}x")
        for r in rows:
            step = next((s for s in rows if s["setting"] == r["setting"] and s["mode"] == "step"
                         and s["batch"] == batch), None)
            if r["batch"] == batch and r["mode"] == "e2e" and step and r["setting"].startswith("engine"):
                print(f"batch {batch}: {r['setting']} e2e / step = {r['img_s'] / step['img_s']:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "compile_s": compile_s, "peak_rss_mb": peak_mb,
                                         "machine": machine()}, indent=1, default=str))


if __name__ == "__main__":
    main()
