"""The study bench: a scaled study timed whole, the engine through
``engine compare`` against the paper's script on tf_keras, trials
alternating, and the full paper study projected for both.

Command (the same as ``engine bench --mode study``; extra options pass through):

    python benchmarks/bench_study.py [RECORDS] [--out DIR] [--parallel 2]

Hardware and time: sized to 30 minutes on the machine it runs on by the
time estimator (``--dry-run`` says how many images that allows). On the
2-core AVX2-only CPU (AMD Zen 3 class), from an empty cache, it chose 160
train / 32 val images (120 / 24 with ``--parallel 2``) and took 45 min both
times: float32 InceptionV3 at 299 px runs 1.6-1.7 img/s there, below the
2.2 the estimate then started from (now 1.6); once rates are measured the
estimate uses them.

Expected there (benchmarks/RESULTS.md, "Study bench again"): study ratio
about 1.5x with the engine's trials in one process and 1.75x as
``--parallel 2`` (the steps are about equally fast; the engine saves
per-trial set-up and the paper's stack's generator overhead), the engine's
epoch within about 5 % of its compute (end-to-end plus evaluation rates),
and the full paper study projected at ~14.4 h against ~15.7 h.
"""

import sys

from engine.cli import main

ARGS = ["bench", "--mode", "study", "--out", "runs/bench-study"]

if __name__ == "__main__":
    sys.argv = ["engine", *ARGS, *sys.argv[1:]]
    main()
