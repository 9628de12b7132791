"""A GPU bench: the automatic choice (bf16 or fp16 tensor cores, XLA on)
against float32, at the paper's batch sizes and the large ones a GPU favours.

Command:

    python benchmarks/bench_gpu.py [RECORDS] [--out DIR]

Hardware: any CUDA GPU visible to TensorFlow (``pip install -e '.[gpu]'``);
minutes on a V100/A100-class card. Batch 5, 10, 15, 64, 128, 256 (a size
that does not fit becomes an OOM row and the run goes on); the augmentation
runs inside the compiled step there, the device's peak memory is reported,
and ``% peak`` uses the card's tensor-core figure from ``engine.bench.flops``.

Expected: the small batches of the paper leave a large GPU mostly idle (a few
hundred img/s); the large batches approach the card's throughput; the paper's
stack, float32 without XLA, several times slower. No figures from this
machine (it has no GPU): add yours to RESULTS.md.
"""

import sys

from engine.cli import main

ARGS = ["bench", "--batch-sizes", "5,10,15,64,128,256", "--precision", "float32,auto", "--xla", "auto",
        "--out", "runs/bench-gpu"]

if __name__ == "__main__":
    sys.argv = ["engine", *ARGS, *sys.argv[1:]]
    main()
