"""Training-step throughput of InceptionV3: Keras 2 vs Keras 3, fused BN or not.

Command (from the repository root, with the package installed, e.g.
``pip install -e ".[dev]"``, or with ``PYTHONPATH=.``)::

    python benchmarks/profile_step.py [--image-size 299] [--batch-size 5]
        [--repeats 15] [--steps 1] [--variants tfk k3 k3-fused ...]
        [--profile DIR] [--profile-steps 3]

(about 2 minutes with the defaults at 299 px on the reference machine, half
of it first steps; ``--profile`` adds about a minute).

What it measures: images per second of ``model.train_on_batch`` on one fixed
in-memory batch of random images and labels, for InceptionV3 (include_top
False, weights None) + GlobalAveragePooling2D + Dense(1, sigmoid), compiled
with Adam and binary cross-entropy and an explicit ``jit_compile`` (False
unless the variant says xla; Keras 3's "auto" would also pick False on a
CPU-only machine), in

* ``tfk``: tf_keras (Keras 2), float32: the paper's stack, whose
  BatchNormalization runs TensorFlow's ``FusedBatchNormV3`` kernel;
* ``k3``: Keras 3 (TensorFlow backend), float32;
* ``k3-fused``: the same with ``engine.model.fused_bn.fuse_batchnorm``;
* ``k3-bf16`` / ``k3-bf16-fused``: Keras 3 under the ``mixed_bfloat16``
  policy (the sigmoid head in float32);
* ``k3-xla`` / ``k3-fused-xla``: Keras 3 float32 with ``jit_compile=True``.

Method: every variant is built, compiled and run once; that first step
(tracing, graph optimisation, XLA compilation) is reported apart, and a
second step is left untimed. Timed repeats are then interleaved (A B C, then
B C A, ... rotating the order) so that load from other users of a shared
machine hits all variants alike; a repeat is ``--steps`` consecutive steps,
each returning its loss as a host NumPy value, so asynchronous execution
cannot stop the clock early. The table gives, per variant, the median and
min-max img/s over the repeats, the median (min-max) of the per-round ratios
to the first variant (each round runs the variants back to back, so a ratio
is little affected by load that changes between rounds), and the process
CPU time per step, which other processes on the machine barely affect. Short
repeats (one step) pair best on a busy machine.

``--profile DIR`` first traces the profiled variants (``tfk``, ``k3`` and,
if selected, ``k3-fused``) one step at a time, in turns, ``--profile-steps``
times each, with ``tf.profiler.experimental`` (host tracer level 3, so cheap
ops are recorded too) into DIR. From the ``.xplane.pb`` events it prints per
step, for each variant, the op self time and op executions grouped by Keras
layer kind (from the op's name scope) and by op type, then the groups that
differ most between ``k3`` (and ``k3-fused``) and ``tfk``. Without the
XPlane protobuf module it falls back to TensorFlow's ``framework_op_stats``
tool (which keeps only the 500 costliest op names).

Hardware of the reference run: 2 vCPUs of an AMD EPYC (AVX-512, BF16) shared
virtual machine, no GPU, TensorFlow 2.21 CPU build (oneDNN on), Keras 3.15.1,
tf_keras 2.21, Python 3.11.

Expected figures on that machine (299 px, 30 repeats of 1 step; other
processes were running, so wall-clock rates spread; batch 16: 12 repeats):

    batch 5     img/s median (min-max)   ratio to tfk   CPU s/step   first step
    tfk         8.3  (7.8-9.2)           1.00           1.13         8 s
    k3          7.7  (7.1-8.8)           0.93           1.25         16 s
    k3-fused    8.7  (8.2-9.9)           1.07           1.10         10 s

i.e. Keras 3 float32 ~7% slower than tf_keras, ~13% faster with fused BN
(k3-fused / k3 per round: x1.13, 1.02-1.26); at batch 16 the fused layer
saves ~13% of the CPU time per step. Under heavier load all rates fell to
4-5 img/s, the ratios stayed. Further (batch 5, 12 repeats): ``k3-bf16``
0.78 CPU s/step and ``k3-bf16-fused`` 0.62 (x1.3, as the fused kernel also
takes bf16 activations without Keras' float32 upcast); ``k3-xla`` and
``k3-fused-xla`` ~1.4 CPU s/step, slower than without XLA on this CPU, and
fusing changes nothing there (XLA fuses the unfused ops itself).

Profile (299 px, batch 5, per step): Keras 3's BatchNormalization runs
3,290 ops (35 per layer: moments, normalisation and their gradients, e.g.
+1,316 Mul, +188 Tile, +189 Sum, +188 Mean, +94 SquaredDifference) against
658 in tf_keras (_MklNativeFusedBatchNormEx, the oneDNN rewrite of
FusedBatchNormV3 with the following ReLU merged in, and its gradient): ~0.31
s of op self time against ~0.11 s, the largest difference between the two
steps; Conv2D (~1.5 s) and Adam (~0.1 s, ~5,130 ops each) are alike. With
the fused layer BatchNormalization drops to 1,222 ops and ~0.09 s.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402 - after the log level
import tensorflow as tf  # noqa: E402

from engine.machine import cpu_name  # noqa: E402

VARIANTS = ("tfk", "k3", "k3-fused", "k3-bf16", "k3-bf16-fused", "k3-xla", "k3-fused-xla")
DEFAULT_VARIANTS = ("tfk", "k3", "k3-fused")
PROFILED = ("tfk", "k3", "k3-fused")


def build_tf_keras(size: int) -> object:
    """The paper's model in tf_keras (Keras 2), float32, compiled."""
    import tf_keras

    base = tf_keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(size, size, 3))
    inputs = tf_keras.Input((size, size, 3))
    x = tf_keras.layers.GlobalAveragePooling2D()(base(inputs))
    outputs = tf_keras.layers.Dense(1, activation="sigmoid")(x)
    model = tf_keras.Model(inputs, outputs)
    model.compile(optimizer=tf_keras.optimizers.Adam(), loss="binary_crossentropy",
                  jit_compile=False)
    return model


def build_keras3(size: int, policy: str, fused: bool, jit_compile: bool) -> object:
    """The same model in Keras 3 under a dtype ``policy``, compiled."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        base = keras.applications.InceptionV3(
            include_top=False, weights=None, input_shape=(size, size, 3))
        inputs = keras.Input((size, size, 3))
        x = keras.layers.GlobalAveragePooling2D()(base(inputs))
        # The sigmoid stays float32 under mixed precision, as in engine.model.
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
        model = keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy(previous)
    if fused:
        from engine.model.fused_bn import fuse_batchnorm

        model = fuse_batchnorm(model)
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy",
                  jit_compile=jit_compile)
    return model


def build(variant: str, size: int) -> object:
    """The compiled model of one variant name (see ``VARIANTS``)."""
    if variant == "tfk":
        return build_tf_keras(size)
    policy = "mixed_bfloat16" if "bf16" in variant else "float32"
    return build_keras3(size, policy, fused="fused" in variant, jit_compile="xla" in variant)


def step_runner(model: object, images: tf.Tensor, labels: tf.Tensor) -> Callable[[], float]:
    """``run()``: one ``train_on_batch`` step, its loss copied to the host."""

    def run() -> float:
        loss = model.train_on_batch(images, labels)
        # Both Keras versions return NumPy/Python values (already synchronised);
        # the explicit conversion makes that a property of this benchmark.
        return float(np.asarray(loss).reshape(-1)[0])

    return run


def fixed_batch(batch_size: int, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One random batch as device tensors, so no step pays a host copy."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 2, (batch_size, 1)).astype(np.float32))
    return images, labels


def time_steps(run: Callable[[], float], steps: int) -> tuple[float, float]:
    """Wall time and process CPU time of ``steps`` consecutive steps, in s.

    CPU time (all threads of this process) is far less sensitive than wall
    time to other processes competing for the cores of a shared machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        run()
    return time.perf_counter() - wall, time.process_time() - cpu


def benchmark(runners: dict[str, Callable[[], float]], batch_size: int, repeats: int,
              steps: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Interleaved repeats; the order rotates so no variant always runs first.

    Returns:
        ({variant: img/s per repeat}, {variant: CPU s per step per repeat}).
    """
    names = list(runners)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            wall, used = time_steps(runners[name], steps)
            rates[name].append(steps * batch_size / wall)
            cpu[name].append(used / steps)
    return rates, cpu


# --- profile -----------------------------------------------------------------

# An op's record: (op name, op type, self time in s, executions).
OpRecord = tuple[str, str, float, int]
Stats = dict[str, tuple[float, int]]

# Keras layer-name stems (``batch_normalization_12`` -> ``batch_normalization``)
# mapped to the kinds of the by-layer table; ``adam`` is the optimizer scope.
LAYER_KINDS = {
    "batch_normalization": "BatchNormalization",
    "conv2d": "Conv2D",
    "activation": "Activation (ReLU)",
    "average_pooling2d": "pooling",
    "max_pooling2d": "pooling",
    "global_average_pooling2d": "pooling",
    "mixed": "Concatenate",
    "concatenate": "Concatenate",
    "dense": "Dense",
    "binary_crossentropy": "loss",
    "adam": "optimizer (Adam)",
}


def trace(run: Callable[[], float], steps: int, logdir: str) -> str:
    """Profiles ``steps`` steps into ``logdir``; returns the new .xplane.pb path."""
    before = set(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    # Level 3 also records the inexpensive ops (element-wise, variable reads
    # and assignments): the default level 2 drops them, and they are where an
    # unfused layer or optimizer differs.
    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3, python_tracer_level=0)
    tf.profiler.experimental.start(logdir, options=options)
    try:
        for _ in range(steps):
            run()
    finally:
        tf.profiler.experimental.stop()
    new = set(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)) - before
    if not new:
        raise RuntimeError(f"the profiler wrote no .xplane.pb under {logdir}")
    return max(new, key=os.path.getmtime)


def records_from_xplane(xplane: str) -> list[OpRecord]:
    """One record per op execution, from the trace's host events.

    TensorFlow's executor records each op it runs as an event named
    ``name:Type`` (display name ``Type``) on the thread that ran it; an op's
    self time is its duration less that of the events nested directly inside
    it on the same thread. Calls of a ``tf.function`` (types ``__inference_*``)
    are left out: their self time is mostly waiting for ops on other threads.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane, "rb") as handle:
        space.ParseFromString(handle.read())
    records = []
    for plane in space.planes:
        if not plane.name.startswith("/host"):
            continue
        for line in plane.lines:
            events = []
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                if meta.display_name and meta.name.endswith(":" + meta.display_name):
                    events.append((event.offset_ps, event.offset_ps + event.duration_ps,
                                   meta.name))
            for name, self_ps in _self_times(events):
                op_name, op_type = name.rsplit(":", 1)
                if not op_type.startswith("__"):
                    records.append((op_name, op_type, self_ps * 1e-12, 1))
    return records


def _self_times(events: list[tuple[int, int, str]]) -> list[tuple[str, int]]:
    """(name, self time) of the nested (begin, end, name) intervals of one thread."""
    result: list[list] = []
    stack: list[list] = []
    for begin, end, name in sorted(events, key=lambda event: (event[0], -event[1])):
        while stack and stack[-1][1] <= begin:
            stack.pop()
        entry = [begin, end, name, end - begin]
        if stack:
            stack[-1][3] -= end - begin
        stack.append(entry)
        result.append(entry)
    return [(entry[2], entry[3]) for entry in result]


def records_from_plugin(xplane: str) -> list[OpRecord] | None:
    """Per-op-name records from TF's ``framework_op_stats`` tool.

    A fallback only: the tool keeps the 500 op names with the largest self
    time, so cheap but numerous ops (an unfused layer's) are undercounted.
    Returns None when the plugin bindings are missing or the answer is not
    the tool's JSON table.
    """
    try:
        from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin
    except ImportError:
        return None
    raw, ok = plugin.xspace_to_tools_data([xplane], "framework_op_stats", {})
    try:
        tables = json.loads(raw) if ok else None
    except ValueError:
        return None
    if not tables:
        return None
    table = tables[-1] if isinstance(tables, list) else tables  # the one without IDLE
    columns = [col["id"] for col in table["cols"]]
    records = []
    for row in table["rows"]:
        cells = dict(zip(columns, (cell.get("v") if cell else None for cell in row["c"])))
        if cells.get("type") not in (None, "IDLE"):
            records.append((cells["operation"], cells["type"],
                            float(cells["total_self_time"]) * 1e-6, int(cells["occurrences"])))
    return records


def op_records(xplane: str) -> tuple[list[OpRecord], str]:
    """The op records of a trace, and which reader produced them."""
    try:
        return records_from_xplane(xplane), "xplane events"
    except ImportError:
        records = records_from_plugin(xplane)
        if records is None:
            raise RuntimeError("neither the XPlane protobuf nor the profiler plugin is "
                               "available to read the trace") from None
        return records, "framework_op_stats, top 500 op names only"


def layer_kind(op_name: str) -> str:
    """The kind of Keras layer (or the optimizer) an op belongs to, by scope.

    Ops outside any layer scope are "other": among them the ``AddN`` that
    sums the gradients of a tensor used twice (as an unfused BN's input is).
    """
    for part in op_name.split("/"):
        stem = re.sub(r"(_\d+)+$", "", part).lower()
        if stem in LAYER_KINDS:
            return LAYER_KINDS[stem]
    return "other"


def aggregate(records: list[OpRecord], key: Callable[[OpRecord], str]) -> Stats:
    """{key: (self time in s, executions)} summed over the records."""
    stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for record in records:
        entry = stats[key(record)]
        entry[0] += record[2]
        entry[1] += record[3]
    return {name: (seconds, int(count)) for name, (seconds, count) in stats.items()}


def print_top(title: str, stats: Stats, steps: int, top: int, label: str) -> None:
    """The groups with the largest self time per step."""
    total = sum(s for s, _ in stats.values()) / steps
    executions = sum(n for _, n in stats.values()) / steps
    print(f"\n{title}: {total * 1e3:,.0f} ms of op self time and {executions:,.0f} op "
          f"executions per step")
    print(f"  {label:<30} {'ms/step':>8} {'share':>6} {'ops/step':>9}")
    for name, (seconds, count) in sorted(stats.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {name:<30} {seconds / steps * 1e3:>8.1f} {seconds / steps / total:>6.1%} "
              f"{count / steps:>9.0f}")


def print_differences(base: str, other: str, stats: dict[str, Stats], steps: int, top: int,
                      label: str) -> None:
    """The groups whose self time per step differs most between two variants."""
    a, b = stats[base], stats[other]
    rows = []
    for name in set(a) | set(b):
        sa, na = a.get(name, (0.0, 0))
        sb, nb = b.get(name, (0.0, 0))
        rows.append((name, (sb - sa) / steps, sa / steps, sb / steps, (nb - na) / steps))
    rows.sort(key=lambda row: -abs(row[1]))
    total = sum(row[1] for row in rows)
    count = sum(row[4] for row in rows)
    print(f"\n{other} - {base} by {label}: {total * 1e3:+,.0f} ms of op self time and "
          f"{count:+,.0f} op executions per step; largest differences:")
    print(f"  {label:<30} {'delta ms':>9} {base + ' ms':>10} {other + ' ms':>12} "
          f"{'delta ops':>10}")
    for name, delta, sa, sb, dn in rows[:top]:
        print(f"  {name:<30} {delta * 1e3:>+9.1f} {sa * 1e3:>10.1f} {sb * 1e3:>12.1f} "
              f"{dn:>+10.0f}")


def profile(runners: dict[str, Callable[[], float]], logdir: str, steps: int, top: int) -> None:
    """Traces the profiled variants and prints their op statistics.

    Each variant is traced for one step at a time, in turns (A B C A B C
    ...), ``steps`` times, so that load from other processes spreads over
    all of them. Self times add up the work of both executor threads, so a
    step's total exceeds its wall time on a multi-core machine; op counts are
    exact, while self times still move with the load of a shared machine.
    """
    names = [name for name in PROFILED if name in runners]
    records: dict[str, list[OpRecord]] = {name: [] for name in names}
    for step in range(steps):
        for name in names:
            xplane = trace(runners[name], 1, os.path.join(logdir, name, f"step{step}"))
            found, reader = op_records(xplane)
            records[name].extend(found)
    print(f"\nprofiles ({reader}) under {logdir}, {steps} steps per variant")
    by_type = {name: aggregate(records[name], lambda record: record[1]) for name in names}
    by_kind = {name: aggregate(records[name], lambda record: layer_kind(record[0]))
               for name in names}
    for name in names:
        print_top(f"{name} by layer", by_kind[name], steps, top, "layer kind")
        print_top(f"{name} by op type", by_type[name], steps, top, "op type")
    for other in ("k3", "k3-fused"):
        if "tfk" in by_type and other in by_type:
            print_differences("tfk", other, by_kind, steps, top, "layer kind")
            print_differences("tfk", other, by_type, steps, top, "op type")


# --- main ----------------------------------------------------------------------


def tf_keras_version() -> str:
    """tf_keras' version, or a note that it is missing (only ``tfk`` needs it)."""
    try:
        import tf_keras
    except ImportError:
        return "not installed"
    return tf_keras.__version__


def paired_ratios(rates: dict[str, list[float]], name: str, reference: str) -> list[float]:
    """Per-round ratios ``name / reference``: the two ran back to back in each
    round, so load that changes between rounds cancels out."""
    return [a / b for a, b in zip(rates[name], rates[reference])]


def print_table(rates: dict[str, list[float]], cpu: dict[str, list[float]],
                first_step: dict[str, float], repeats: int, steps: int) -> None:
    """Median (min-max) img/s and CPU s/step per variant, paired ratio to the first."""
    reference = next(iter(rates))
    print(f"\n{repeats} interleaved repeats of {steps} steps; ratio: median (min-max) of "
          f"per-round img/s ratios to {reference}; CPU: process CPU s per step")
    header = (f"{'variant':<14} {'first step s':>12} {'median img/s':>13} {'min-max':>13} "
              f"{'ratio':>6} {'min-max':>11} {'CPU s/step':>11} {'min-max':>11}")
    print(header)
    print("-" * len(header))
    for name, values in rates.items():
        ratios = paired_ratios(rates, name, reference)
        print(f"{name:<14} {first_step[name]:>12.1f} {statistics.median(values):>13.2f} "
              f"{min(values):>6.2f}-{max(values):<6.2f} {statistics.median(ratios):>6.2f} "
              f"{min(ratios):>5.2f}-{max(ratios):<5.2f} {statistics.median(cpu[name]):>11.2f} "
              f"{min(cpu[name]):>5.2f}-{max(cpu[name]):<5.2f}")


def print_fused_ratios(rates: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """Paired speed-up of each fused variant over the same variant unfused."""
    for name in rates:
        plain = name.replace("-fused", "")
        if name != plain and plain in rates:
            ratios = paired_ratios(rates, name, plain)
            saved = paired_ratios(cpu, plain, name)
            print(f"{name} / {plain}: img/s x{statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f}), CPU per step "
                  f"/{statistics.median(saved):.2f} ({min(saved):.2f}-{max(saved):.2f}), "
                  f"medians of per-round ratios")


def parse_args() -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per variant")
    parser.add_argument("--steps", type=int, default=1, help="train steps per repeat")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--profile", metavar="DIR", help="trace tfk, k3 (and k3-fused) into DIR")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="op types listed per profile")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    if args.image_size < 75:
        parser.error("InceptionV3 needs --image-size of at least 75")
    return args


def main() -> None:
    args = parse_args()
    # Each variant is its own tf.function; TF counts them as retraces and warns.
    tf.get_logger().setLevel("ERROR")
    import keras

    print(f"host: {platform.machine()} {cpu_name()}, {os.cpu_count()} logical CPUs; "
          f"TF {tf.__version__}, Keras {keras.__version__}, tf_keras {tf_keras_version()}; "
          f"{args.image_size} px, batch {args.batch_size}")
    images, labels = fixed_batch(args.batch_size, args.image_size)
    runners, first_step = {}, {}
    for name in args.variants:
        start = time.perf_counter()
        runners[name] = step_runner(build(name, args.image_size), images, labels)
        built = time.perf_counter()
        runners[name]()
        first_step[name] = time.perf_counter() - built
        print(f"  {name:<14} built in {built - start:5.1f} s, first step {first_step[name]:5.1f} s",
              flush=True)
    # A second untimed step: some graph rewrites and allocator growth settle
    # only after the first call.
    for run in runners.values():
        run()

    if args.profile:
        profile(runners, args.profile, args.profile_steps, args.top)

    rates, cpu = benchmark(runners, args.batch_size, args.repeats, args.steps)
    print_table(rates, cpu, first_step, args.repeats, args.steps)
    print_fused_ratios(rates, cpu)


if __name__ == "__main__":
    main()
