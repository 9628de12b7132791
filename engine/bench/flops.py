"""Work per image and peak throughput: what fraction of the hardware a run uses.

A training rate in images/s says little by itself; divided by the hardware's
peak it says how much room is left. This module gives both sides:

* ``model_macs``: multiply-accumulates of one image's forward pass, counted
  from the layer shapes of a built Keras 3 model;
* ``train_flops_per_image``: the usual 6 FLOPs per MAC for a training step;
* ``peak``: the peak FLOP/s of the device the engine runs on, from a GPU spec
  sheet table or, on a CPU, from the core count, clock and vector units,
  checked against a measured matrix product;
* ``percent_of_peak``: the two put together.
"""

from __future__ import annotations

import math
import re
import time

import keras
import tensorflow as tf

from engine import machine
from engine.model import keras_internals

# bf16 FLOPs per cycle and core of Intel AMX (one TMUL tile unit).
AMX_BF16_FLOPS_PER_CYCLE = 1024

# Dense (no structured sparsity) TFLOP/s from the vendors' spec sheets and
# architecture whitepapers: fp32 on the CUDA cores, fp16 and bf16 on the
# tensor cores (None: no bf16 tensor cores). GeForce cards run fp16/bf16
# with fp32 accumulation, which mixed precision uses, at half their
# fp16-accumulate rate; those are the figures given here.
GPU_PEAKS: dict[str, dict[str, float | None]] = {
    "V100": {"fp32": 15.7, "fp16": 125.0, "bf16": None},  # SXM2
    "V100-PCIE": {"fp32": 14.0, "fp16": 112.0, "bf16": None},
    "V100S": {"fp32": 16.4, "fp16": 130.0, "bf16": None},
    # Pascal has no tensor cores: fp16 is the packed half2 rate.
    "P100-PCIE": {"fp32": 9.3, "fp16": 18.7, "bf16": None},
    "P100-SXM2": {"fp32": 10.6, "fp16": 21.2, "bf16": None},
    "T4": {"fp32": 8.1, "fp16": 65.0, "bf16": None},
    "A10": {"fp32": 31.2, "fp16": 125.0, "bf16": 125.0},
    "A30": {"fp32": 10.3, "fp16": 165.0, "bf16": 165.0},
    "A40": {"fp32": 37.4, "fp16": 149.7, "bf16": 149.7},
    "A100": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0},
    "A6000": {"fp32": 38.7, "fp16": 154.8, "bf16": 154.8},  # RTX A6000
    "L4": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0},
    "L40": {"fp32": 90.5, "fp16": 181.0, "bf16": 181.0},
    "L40S": {"fp32": 91.6, "fp16": 362.0, "bf16": 362.0},
    "H100": {"fp32": 67.0, "fp16": 989.5, "bf16": 989.5},  # SXM5
    "H100 PCIe": {"fp32": 51.0, "fp16": 756.5, "bf16": 756.5},
    "H100 NVL": {"fp32": 60.0, "fp16": 835.5, "bf16": 835.5},
    "H200": {"fp32": 67.0, "fp16": 989.5, "bf16": 989.5},
    "RTX 3090": {"fp32": 35.6, "fp16": 71.0, "bf16": 71.0},
    "RTX 3090 Ti": {"fp32": 40.0, "fp16": 80.0, "bf16": 80.0},
    "RTX 4090": {"fp32": 82.6, "fp16": 165.2, "bf16": 165.2},
}

_PRECISIONS = {"float32": "fp32", "mixed_float16": "fp16", "float16": "fp16",
               "mixed_bfloat16": "bf16", "bfloat16": "bf16"}

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_COUNTED = _CONVS + _DEPTHWISE + _SEPARABLE + _TRANSPOSED + (keras.layers.Dense,)


# Work per image


def model_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass through ``model``.

    Counted analytically from the built shapes (batch dimension excluded):
    convolutions (plain, grouped, depthwise, separable and transposed, 1-3-D)
    and Dense layers (over every leading position when the input has more
    than 2 dimensions). Nested models are counted once per call. Bias adds,
    BatchNormalization, pooling and activations are not counted: that is the
    convention of the published ~5.7 G multiply-adds for InceptionV3 at
    299 x 299, and they are a small share of its work.

    Args:
        model: a Functional or Sequential Keras 3 model with fixed spatial
            input sizes (nested models included). Subclassed models are
            counted from each layer's first symbolic call, if it has one.

    Raises:
        ValueError: a counted layer has an unknown (None) spatial size, or
            (subclassed models) no recorded call.
    """
    total = 0
    for layer, input_shape, output_shape in _calls(model):
        if isinstance(layer, keras.Model):
            # A nested model's own graph fixes its layers' shapes; each
            # call of it in the outer graph runs that graph once more.
            total += model_macs(layer)
        else:
            total += layer_macs(layer, input_shape, output_shape)
    return total


def layer_macs(layer: keras.layers.Layer, input_shape: tuple, output_shape: tuple) -> int:
    """Multiply-accumulates of one call of ``layer`` on one example.

    Args:
        layer: a built layer; kinds other than convolutions and Dense count 0.
        input_shape / output_shape: the call's shapes, batch dimension first.
    """
    if isinstance(layer, _SEPARABLE):
        # Depthwise (strided) then a 1x1 pointwise at the output resolution.
        kernels = _size(layer.depthwise_kernel.shape) + _size(layer.pointwise_kernel.shape)
        return _positions(layer, output_shape) * kernels
    if isinstance(layer, _CONVS + _DEPTHWISE):
        # The kernel is (k..., in / groups, out) or (k..., in, multiplier):
        # its size is the MACs per output position either way.
        return _positions(layer, output_shape) * _size(layer.kernel.shape)
    if isinstance(layer, _TRANSPOSED):
        # Every input position is scattered through the whole kernel.
        return _positions(layer, input_shape) * _size(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return _size(output_shape[1:-1], layer) * _size(layer.kernel.shape)
    return 0


def _calls(model: keras.Model) -> list[tuple]:
    """(layer, input shape, output shape) of every layer call in ``model``'s graph.

    A shared layer appears once per call. Only the calls recorded in this
    model's own graph count: a layer may also have been called elsewhere
    (e.g. in the model it was cloned from).
    """
    nodes_by_depth = keras_internals.nodes_by_depth(model)
    if nodes_by_depth is None:
        # Subclassed models keep no graph: fall back to each layer's first
        # symbolic call, and refuse rather than silently count 0 without one.
        unrecorded = [layer.name for layer in model.layers if not keras_internals.called(layer)
                      and isinstance(layer, _COUNTED + (keras.Model,))]
        if unrecorded:
            raise ValueError(f"cannot count MACs of {model.name!r}: no recorded call of "
                             f"{', '.join(unrecorded)} (a subclassed model keeps no graph); "
                             f"build it as a Functional model")
        return [(layer, _shape(layer.input), _shape(layer.output)) for layer in model.layers
                if keras_internals.called(layer)]
    calls = []
    for nodes in nodes_by_depth.values():
        for node in nodes:
            if node.is_input or isinstance(node.operation, keras.layers.InputLayer):
                continue
            calls.append((node.operation, _shape(node.input_tensors), _shape(node.output_tensors)))
    return calls


def _shape(tensors) -> tuple:
    """Shape of a tensor or of the first of a list (multi-input layers count 0)."""
    if isinstance(tensors, (list, tuple)):
        return tuple(tensors[0].shape) if tensors else ()
    return tuple(tensors.shape)


def _positions(layer: keras.layers.Layer, shape: tuple) -> int:
    """Spatial positions of a conv layer's input or output, for its data format."""
    spatial = shape[1:-1] if layer.data_format == "channels_last" else shape[2:]
    return _size(spatial, layer)


def _size(dims, layer: keras.layers.Layer | None = None) -> int:
    """Product of ``dims``; a None among them cannot be counted."""
    if any(d is None for d in dims):
        where = f" of layer {layer.name!r}" if layer is not None else ""
        raise ValueError(f"cannot count MACs: unknown size in shape {tuple(dims)}{where}; "
                         f"build the model with a fixed input size")
    return math.prod(int(d) for d in dims)


def train_flops_per_image(macs: int) -> float:
    """FLOPs of one training step per image: 2 per MAC, times 3.

    The standard approximation: a MAC is 2 FLOPs (multiply, add), and the
    backward pass costs about twice the forward one (the gradients with
    respect to the layer inputs and with respect to the weights each take one
    product of the forward's size). Normalization, activations and the
    optimizer update are left out, as they are from ``model_macs``.
    """
    return 2.0 * 3.0 * macs


# Peak throughput


def precision_kind(precision: str) -> str:
    """``fp32``, ``fp16`` or ``bf16``: the arithmetic a Keras precision policy computes in."""
    if precision not in _PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(_PRECISIONS)} "
                         f"(resolve 'auto' first)")
    return _PRECISIONS[precision]


def cpu_peak(precision: str) -> dict:
    """Estimated peak FLOP/s of this CPU for ``precision``.

    cores x clock x fp32 lanes (16 with AVX-512, 8 with AVX2/FMA, 4
    otherwise) x 2 (a fused multiply-add is 2 FLOPs) x 2 FMA units per core.
    The 2 FMA units are an assumption: true of recent server cores, while
    some cores (and AVX-512 on some) have one. bf16 doubles the rate where
    the CPU has AVX512_BF16 (its dot-product instruction multiplies pairs of
    bf16 into each fp32 lane); with AMX the tile unit gives 1024 bf16 FLOPs
    per cycle and core. fp16 runs at the fp32 rate (TensorFlow's CPU kernels
    compute it in fp32).

    Returns:
        {"gflops": float, "basis": human-readable formula, "estimate": True}
    """
    kind = precision_kind(precision)
    flags = machine.cpu_flags()
    cores = machine.cpu_cores()
    ghz, clock = machine.cpu_clock()
    if ghz <= 0:
        return {"gflops": 0.0, "basis": "no clock in /proc/cpuinfo or cpufreq: no estimate",
                "estimate": True}
    if kind == "bf16" and "amx_bf16" in flags:
        return {"gflops": cores * ghz * AMX_BF16_FLOPS_PER_CYCLE,
                "basis": f"{cores} cores x {ghz:.2f} GHz x {AMX_BF16_FLOPS_PER_CYCLE} bf16 FLOPs/cycle "
                         f"(AMX), {clock}",
                "estimate": True}
    if "avx512f" in flags:
        lanes, units = 16, "x 2 (FMA)"
    elif flags & {"avx2", "fma"}:
        lanes, units = 8, "x 2 (FMA)"
    else:
        lanes, units = 4, "x 2 (multiply + add)"
    gflops = cores * ghz * lanes * 2 * 2
    basis = f"{cores} cores x {ghz:.2f} GHz x {lanes} fp32 lanes {units} x 2 FMA units (assumed)"
    if kind == "bf16":
        if "avx512_bf16" in flags:
            gflops *= 2
            basis += " x 2 (avx512_bf16 pairs)"
        else:
            basis += ", bf16 at the fp32 rate (no bf16 instructions)"
    elif kind == "fp16":
        basis += ", fp16 at the fp32 rate on a CPU"
    return {"gflops": gflops, "basis": f"{basis}, {clock}", "estimate": True}


def matmul_dtype(precision: str, on_gpu: bool) -> tf.DType:
    """The dtype a precision's matrix products run in on this kind of device."""
    kind = precision_kind(precision)
    if kind == "bf16":
        return tf.bfloat16
    if kind == "fp16" and on_gpu:
        return tf.float16
    # fp16 on a CPU: counted at the fp32 rate, as in cpu_peak.
    return tf.float32


def measured_matmul_peak(precision: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product on the default device, best of ``repeats``.

    The attainable peak of this machine: a large product keeps every vector
    unit busy, at whatever clock the CPU boosts to. On a 2-core AMD EPYC VM
    it measured ~468 GFLOP/s in fp32 and ~926 in bf16, above the nominal-clock
    estimate of ~333. Each timing ends when one element of the result reaches
    the host, so asynchronous GPU work is inside it.
    """
    dtype = matmul_dtype(precision, bool(machine.gpus()))
    a = tf.cast(tf.random.stateless_uniform((n, n), seed=(0, 1)), dtype)
    b = tf.cast(tf.random.stateless_uniform((n, n), seed=(0, 2)), dtype)
    product = tf.function(tf.linalg.matmul)
    # Warm-up: tracing, kernel selection and thread-pool start-up are not the rate.
    product(a, b)[0, 0].numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b)[0, 0].numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def gpu_peak(name: str, precision: str) -> dict | None:
    """Spec-sheet peak of the GPU called ``name`` (e.g. "NVIDIA A100-SXM4-40GB").

    Keys of GPU_PEAKS match as case-insensitive substrings bounded by
    non-alphanumerics, the longest first: "H100 PCIe" wins over "H100", and
    "A10" matches neither "A100" nor "A10G". None for an unknown GPU.
    """
    kind = precision_kind(precision)
    lowered = name.lower()
    for key in sorted(GPU_PEAKS, key=len, reverse=True):
        if re.search(rf"(?<![a-z0-9]){re.escape(key.lower())}(?![a-z0-9])", lowered):
            break
    else:
        return None
    entry = GPU_PEAKS[key]
    tflops = entry[kind]
    if tflops is None:
        tflops = entry["fp32"]
        what = "fp32 (no bf16 tensor cores: bf16 runs at the fp32 rate at best)"
    elif kind == "fp32":
        what = "fp32"
        if entry["bf16"] is not None:
            # GPUs with bf16 tensor cores (Ampere on) also have TF32, which
            # TensorFlow uses for float32 matmuls and convolutions by default.
            what += " (TensorFlow's default TF32 tensor-core math can exceed it)"
    else:
        what = f"dense {kind}, without sparsity"
    return {"gflops": tflops * 1000, "basis": f"{key} spec sheet: {tflops:g} TFLOP/s {what}",
            "estimate": False}


def peak(precision: str, measure: bool = True) -> dict | None:
    """Peak FLOP/s of the devices a run uses (all visible GPUs, else the CPU).

    GPUs: the sum of their spec-sheet figures (the engine trains on all local
    GPUs); None if any is not in GPU_PEAKS. CPU: the larger of the estimate
    of ``cpu_peak`` and a measured matrix product (``measure``), since a rate
    actually reached bounds the peak from below, while the nominal clock of a
    boosting CPU understates it.

    Returns:
        GPU: {"gflops", "basis", "estimate": False}. CPU: {"gflops",
        "estimate_gflops", "measured_gflops" (None without ``measure``),
        "basis", "estimate": True}.
    """
    names = [gpu["name"] for gpu in machine.gpu_details()]
    if names:
        peaks = [gpu_peak(name, precision) for name in names]
        if any(p is None for p in peaks):
            return None
        basis = peaks[0]["basis"] if len(peaks) == 1 else \
            f"{len(peaks)} GPUs: " + "; ".join(p["basis"] for p in peaks)
        return {"gflops": sum(p["gflops"] for p in peaks), "basis": basis, "estimate": False}
    estimate = cpu_peak(precision)
    measured = measured_matmul_peak(precision) if measure else None
    basis = f"estimate: {estimate['basis']}"
    gflops = estimate["gflops"]
    if measured is not None:
        basis += (f"; measured {matmul_dtype(precision, False).name} 2048 x 2048 matmul: "
                  f"{measured:.0f} GFLOP/s, a floor for the true peak (the clock boosts above "
                  f"nominal); the larger is used")
        gflops = max(gflops, measured)
    return {"gflops": gflops, "estimate_gflops": estimate["gflops"], "measured_gflops": measured,
            "basis": basis, "estimate": True}


def percent_of_peak(img_per_s: float, flops_per_image: float, peak_gflops: float | None) -> float | None:
    """Achieved FLOP/s as a percentage of the peak; None without a (positive) peak."""
    if peak_gflops is None or peak_gflops <= 0:
        return None
    return 100.0 * img_per_s * flops_per_image / (peak_gflops * 1e9)
