"""Facts about the machine a result was measured on: CPU, its instruction
sets, cores, clock, GPUs and free memory. Read-only; every layer may ask."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


def cpu_flags() -> set[str]:
    """The instruction-set flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_cpu() -> bool:
    """Whether the CPU has bf16 instructions (without them bf16 is emulated, ~10x slower)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_name() -> str:
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset).

    Hyper-thread siblings are counted as cores: they share one core's vector
    units, so a peak computed from this is overstated on a machine with SMT.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_clock() -> tuple[float, str]:
    """The CPU clock in GHz and what kind of clock it is (0.0 when unknown).

    cpufreq's maximum, where the kernel exposes it, is the highest (turbo)
    clock. Otherwise /proc/cpuinfo's "cpu MHz": in a VM, the nominal clock the
    hypervisor reports, which a boosting CPU exceeds under load.
    """
    try:
        return int(MAX_FREQ.read_text().strip()) / 1e6, "maximum clock (cpufreq)"
    except (OSError, ValueError):
        pass
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return 0.0, "clock unknown"
    mhz = [float(line.split(":", 1)[1]) for line in lines if line.startswith("cpu MHz")]
    # On bare metal each core reports its current clock: the fastest is nearest the peak.
    if not mhz:
        return 0.0, "clock unknown"
    return max(mhz) / 1000, "nominal clock (turbo may exceed it)"


def gpus() -> list:
    """The physical GPUs TensorFlow sees."""
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


def gpu_capabilities() -> list[tuple[int, int]]:
    """The compute capability of each visible GPU ([] without one). From
    TensorFlow when this process has imported it (what training runs on);
    otherwise without starting it, from ``nvidia-smi`` (the GPUs
    CUDA_VISIBLE_DEVICES leaves), so a dry run, an estimate or a report
    needs no framework: importing TensorFlow takes 10-15 s on a CPU."""
    if sys.modules.get("tensorflow") is not None:
        return [tuple(d["compute_capability"] or (0, 0)) for d in gpu_details()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "--query-gpu=index,compute_cap", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = {}
    for line in listed.splitlines():
        index, _, cap = (part.strip() for part in line.partition(","))
        major, _, minor = cap.partition(".")
        if major.isdigit() and minor.isdigit():
            found[index] = (int(major), int(minor))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        return list(found.values())  # unset, or named by UUID: every GPU the driver lists
    return [found[v.strip()] for v in visible.split(",") if v.strip() in found]


def tensorflow_version() -> str:
    """TensorFlow's version from its installed package, without importing it."""
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def gpu_details() -> list[dict]:
    """Name and compute capability of each GPU, as CUDA reports them."""
    import tensorflow as tf
    out = []
    for gpu in gpus():
        info = tf.config.experimental.get_device_details(gpu)
        out.append({"name": info.get("device_name", gpu.name), "compute_capability": info.get("compute_capability")})
    return out


def device_name() -> str:
    """Where a training step runs when one device is timed: the first GPU, else the CPU."""
    import tensorflow as tf
    logical = tf.config.list_logical_devices("GPU")
    return logical[0].name if logical else "/CPU:0"


def available_memory_mb() -> float | None:
    """Host memory still available (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20 if pages else None


def describe() -> dict:
    """What a result needs to say about where it was measured."""
    import keras
    import tensorflow as tf
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpus": gpu_details(), "bf16_cpu": bf16_cpu(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()}
