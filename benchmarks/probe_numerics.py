"""The precision probe's numerics check, run by hand: the same initial weights
trained for ``PROBE_STEPS`` steps on the same real training batches in float32
and in a reduced precision, with the check's verdict.

    python benchmarks/probe_numerics.py RECORDS [--model InceptionV3] [--lr 1e-3] [--batch 5]
        [--precision mixed_bfloat16] [--repeats 3]

Prints each precision's losses and timing, and ``numerics_check``'s verdict
per repeat (a repeat rebuilds both; float32 repeats its own losses exactly, so
a verdict that varies comes from the reduced precision). On an Intel AMX CPU
set ENGINE_ALLOW_AMX_BF16=1 only to let ``auto`` consider bf16 in training;
this script always runs what it is told.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from engine import machine
from engine.config import TrainConfig
from engine.data.manifest import load_manifest
from engine.training import numerics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--model", default="InceptionV3")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    manifest = load_manifest(args.records)
    cfg = TrainConfig(records=args.records, lr=args.lr, batch_size=args.batch)
    cfg = replace(cfg, model=replace(cfg.model, name=args.model, weights="none", image_size=manifest["image_size"][0],
                                     channels=manifest["channels"]))
    print(f"{machine.cpu_name()} | flags {' '.join(sorted(f for f in machine.cpu_flags() if 'bf16' in f or 'amx' in f))}"
          f" | {args.model} {manifest['image_size'][0]} px, batch {args.batch}, lr {min(args.lr, numerics.PROBE_MAX_LR)}")
    measure = numerics.probe_rates(cfg, manifest["channels"])
    for repeat in range(args.repeats):
        results = {}
        for precision in ("float32", args.precision):
            start = time.perf_counter()
            rate, losses = measure(precision, "off")
            results[precision] = losses
            print(f"[{repeat}] {precision:15s} {rate:6.2f} img/s  {time.perf_counter() - start:5.1f} s  "
                  f"losses {' '.join(f'{v:.3f}' for v in losses)}")
        print(f"[{repeat}] check: {numerics.numerics_check(results['float32'], results[args.precision])}")


if __name__ == "__main__":
    main()
