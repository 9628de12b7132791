"""The study bench: a scaled study timed whole, the engine through
``engine compare`` against the paper's script on tf_keras, trials
alternating, and the full paper study projected for both.

Command (the same as ``engine bench --mode study``; extra options pass through):

    python benchmarks/bench_study.py [RECORDS] [--out DIR] [--parallel 2]

Hardware and time: sized to 30 minutes on the machine it runs on
(``--dry-run`` says how many images that allows): on the 2-core AVX2-only
CPU (AMD Zen 3 class, float32 InceptionV3 at 299 px ~2 img/s) about 110
train / 22 val images per trial; more on an AVX-512-BF16 CPU.

Expected (benchmarks/RESULTS.md, "Study bench"): the study ratio, per batch
size the engine's epoch time against its compute (end-to-end plus
evaluation rates), and the full paper study (8 runs x 20 epochs) projected
for both stacks on this machine.
"""

import sys

from engine.cli import main

ARGS = ["bench", "--mode", "study", "--out", "runs/bench-study"]

if __name__ == "__main__":
    sys.argv = ["engine", *ARGS, *sys.argv[1:]]
    main()
