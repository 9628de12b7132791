"""build-records throughput and the record encoding choice.

Command (2-core x86 reference machine, ~3 minutes):

    python benchmarks/bench_records.py --images 1000 --repeats 3

What it measures, on synthetic 299-px grayscale PNG chest X-rays (the size of
the COVID-19 Radiography Database's images):

* build images/s: source PNGs -> shards, over a 2-process pool, for each record
  encoding (png, raw, jpeg); interpreter and TensorFlow start-up excluded
  (the manifest's own clock);
* bytes per image on disk for each encoding;
* read images/s: shards -> decoded uint8 tensors with plain tf.data
  (parallel map), the cost a training epoch pays when the decoded cache is off.

Encodings are interleaved (png raw jpeg png raw jpeg ...) so that machine noise
hits them alike; medians and min-max over repeats are printed. Expected on the
reference machine: build >= 300 images/s for every encoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def read_rate(folder: Path) -> float:
    import tensorflow as tf

    from engine.data.manifest import load_manifest, parse_fn, shard_paths

    manifest = load_manifest(folder)
    files = shard_paths(folder, "train", manifest)
    ds = (tf.data.TFRecordDataset(files, num_parallel_reads=len(files))
          .map(parse_fn(manifest), num_parallel_calls=tf.data.AUTOTUNE).batch(64))
    start = time.perf_counter()
    count = sum(int(images.shape[0]) for images, _ in ds)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--encodings", default="png,raw,jpeg")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    import tensorflow as tf  # noqa: F401 - start-up outside every clock

    from engine.data import records, synthetic
    from engine.config import RecordsConfig

    encodings = args.encodings.split(",")
    rows: dict[str, dict[str, list[float]]] = {e: {"build": [], "read": [], "bytes": []} for e in encodings}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        start = time.perf_counter()
        synthetic.generate(src, counts={"train": args.images}, workers=args.workers)
        print(f"generated {args.images} 299-px PNGs in {time.perf_counter() - start:.1f} s")
        for repeat in range(args.repeats):
            for encoding in encodings:
                out = Path(tmp) / f"out-{encoding}-{repeat}"
                manifest = records.build(RecordsConfig(src=src, out=out, encoding=encoding,
                                                       workers=args.workers, fractions=(1.0, 0.0, 0.0)),
                                         quiet=True)
                size = sum(p.stat().st_size for p in out.glob("*.tfrecord-*")) / args.images
                rows[encoding]["build"].append(manifest["images_per_second"])
                rows[encoding]["bytes"].append(size)
                rows[encoding]["read"].append(read_rate(out))
                print(f"repeat {repeat + 1} {encoding}: build {manifest['images_per_second']:.0f} img/s, "
                      f"read {rows[encoding]['read'][-1]:.0f} img/s, {size / 1024:.1f} KiB/image")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"workers={args.workers}, {args.images} images, medians (min-max) of {args.repeats}")
    print("| encoding | build img/s | read img/s | KiB/image |")
    print("|---|---|---|---|")
    summary = {}
    for encoding, r in rows.items():
        cell = {k: (statistics.median(v), min(v), max(v)) for k, v in r.items()}
        summary[encoding] = cell
        print(f"| {encoding} | {cell['build'][0]:.0f} ({cell['build'][1]:.0f}-{cell['build'][2]:.0f}) | "
              f"{cell['read'][0]:.0f} ({cell['read'][1]:.0f}-{cell['read'][2]:.0f}) | "
              f"{cell['bytes'][0] / 1024:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
