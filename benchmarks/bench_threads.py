"""TensorFlow thread-pool sizes for the training step: is anything better than the defaults?

Command (2-core x86 reference machine, ~5 minutes):

    python benchmarks/bench_threads.py --settings default,1/1,2/1,2/2 --repeats 2

Each setting ``intra/inter`` runs in its own process (thread pools are fixed
once TensorFlow starts): InceptionV3 at 299 px, batch 5, float32, the
engine's model (fused BatchNorm), 2 warm-up steps, then ``--steps`` timed
``train_on_batch`` steps on one in-memory batch, each loss fetched to the
host. Settings are interleaved process by process (A B C A B C); the median
img/s of each is printed with its min-max. ``default`` leaves TensorFlow's
own choice (one intra-op thread per core, inter-op chosen by TensorFlow).
The engine sets the pools only if a setting beats the default clearly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, os
import numpy as np, tensorflow as tf
setting = sys.argv[1]
if setting != "default":
    intra, inter = (int(v) for v in setting.split("/"))
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
import keras
from engine import model as model_lib
from engine.config import ModelConfig
size, batch, steps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
net = model_lib.build(ModelConfig(name="InceptionV3", weights="none", image_size=size, channels=1))
net.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", jit_compile=False)
x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 1)).astype("float32")
y = (np.arange(batch) % 2).astype("float32")
for _ in range(2):
    net.train_on_batch(x, y)
start = time.perf_counter()
for _ in range(steps):
    float(net.train_on_batch(x, y))
print(json.dumps({"img_s": steps * batch / (time.perf_counter() - start)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="default,1/1,2/1,2/2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=5)
    args = parser.parse_args()
    settings = args.settings.split(",")
    rates: dict[str, list[float]] = {s: [] for s in settings}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for repeat in range(args.repeats):
        for setting in settings:
            done = subprocess.run([sys.executable, "-c", CHILD, setting, str(args.image_size), str(args.batch_size),
                                   str(args.steps)], capture_output=True, text=True, env=env, check=True)
            rate = json.loads(done.stdout.strip().splitlines()[-1])["img_s"]
            rates[setting].append(rate)
            print(f"repeat {repeat + 1} {setting}: {rate:.2f} img/s", flush=True)
    print("| intra/inter | img/s median (min-max) | vs default |")
    print("|---|---|---|")
    base = statistics.median(rates[settings[0]])
    for setting, values in rates.items():
        median = statistics.median(values)
        print(f"| {setting} | {median:.2f} ({min(values):.2f}-{max(values):.2f}) | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
