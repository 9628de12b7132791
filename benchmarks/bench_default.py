"""The default bench: the paper's batch sizes, float32 and every setting auto
could pick, the engine against the paper's Keras stack, in one run.

Command (the same as a bare ``engine bench``; extra options pass through):

    python benchmarks/bench_default.py [RECORDS] [--out DIR]

Hardware: the 2-core reference CPU (AMD EPYC with AVX-512 BF16, 24 GiB, no
GPU) takes about 25 minutes (``--dry-run`` estimates it first). InceptionV3 at
299 px, batch 5, 10, 15; precisions float32 and mixed_bfloat16, XLA off and
on; modes input, step, e2e; the paper's tf_keras stack alongside.

Expected there (benchmarks/RESULTS.md): input about 2,000 img/s, over 15x the
paper's ImageDataGenerator; mixed_bfloat16 without XLA about 15-17 img/s end
to end, 1.7-2x the paper's stack (about 8-10 img/s); e2e within a few percent
of step-only.
"""

import sys

from engine.cli import main

ARGS = ["bench", "--out", "runs/bench-default"]

if __name__ == "__main__":
    sys.argv = ["engine", *ARGS, *sys.argv[1:]]
    main()
