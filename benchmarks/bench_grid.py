"""The larger grid: more batch sizes and every precision and XLA combination.

Command:

    python benchmarks/bench_grid.py [RECORDS] [--out DIR]

Hardware: a GPU (a few minutes), or a CPU machine with 32 GB or more: the
four compiled engine models and the paper's stay alive together, and on the
24 GB reference machine the warm-ups had filled 21.5 GB before reaching
batch 32 (the bench now skips, as OOM rows, what would start with < 3 GB
left). There ``--dry-run`` estimates about 33 minutes. Batch 5, 10, 15, 32, 64; float32 and
mixed_bfloat16 (add mixed_float16 on a GPU of compute capability 7.x with
``--precision float32,mixed_float16``), XLA off and on; all three modes and
the paper's stack.

Expected on the reference CPU: images/s rising with the batch size up to 15
and flattening beyond (the step is compute-bound on two cores), the input
pipeline above 4,000 img/s at batch 64; on a GPU, XLA and a 16-bit precision
the fastest, with the largest batch that fits in the suggestion.
"""

import sys

from engine.cli import main

ARGS = ["bench", "--batch-sizes", "5,10,15,32,64", "--precision", "float32,mixed_bfloat16", "--xla", "off,on",
        "--out", "runs/bench-grid"]

if __name__ == "__main__":
    sys.argv = ["engine", *ARGS, *sys.argv[1:]]
    main()
