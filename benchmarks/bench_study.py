"""The study bench: a scaled study timed whole, the engine through
``engine compare`` against the paper's script on tf_keras, trials
alternating, and the full paper study projected for both.

Command (the same as ``engine bench --mode study``; extra options pass through):

    python benchmarks/bench_study.py [RECORDS] [--out DIR] [--parallel 2]

Hardware and time: sized to 30 minutes on the machine it runs on by the
time estimator (``--dry-run`` says how many images that allows). On the
2-core AVX2-only CPU (AMD Zen 3 class) it chose 160 train / 32 val images
from an empty cache and took 45 min (float32 InceptionV3 at 299 px runs
1.6 img/s there, below the rough 2.2 the estimate starts from; once rates
are measured the estimate uses them).

Expected there (benchmarks/RESULTS.md, "Study bench"): study ratio about
1.2x (the steps are equally fast; the engine saves per-trial set-up), the
engine's epoch within 5 % of its compute (end-to-end plus evaluation
rates), and the full paper study projected at ~15 h for both stacks.
"""

import sys

from engine.cli import main

ARGS = ["bench", "--mode", "study", "--out", "runs/bench-study"]

if __name__ == "__main__":
    sys.argv = ["engine", *ARGS, *sys.argv[1:]]
    main()
