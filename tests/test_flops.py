"""MAC counts, training FLOPs, peak estimates and percent of peak."""

import math

import keras
import pytest

from engine import machine
from engine.bench import flops
from engine.config import ModelConfig
from engine.model import build


@pytest.fixture(scope="module")
def inception():
    """The engine's InceptionV3 network at 299 px (built once: a few seconds)."""
    return build(ModelConfig(name="InceptionV3", weights="none", image_size=299, channels=3))


def test_inception_v3_matches_the_published_multiply_adds(inception):
    total = flops.model_macs(inception)
    backbone = flops.model_macs(inception.get_layer("inception_v3"))
    # The head: Dense(2048 -> 256) then Dense(256 -> 1).
    assert total - backbone == 2048 * 256 + 256
    assert abs(total - 5.7e9) / 5.7e9 < 0.05


def test_tiny_model_golden_count():
    inputs = keras.Input((32, 32, 3))
    # 'valid', stride 2: (32 - 3) // 2 + 1 = 15 -> 15 x 15 x 8; 225 * 3*3*3*8.
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid")(inputs)
    # Depthwise, multiplier 2 -> 16 channels: 225 * 3*3*8*2.
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    # Grouped, 4 groups of 4 inputs -> 8 outputs: 225 * 3*3*4*8.
    x = keras.layers.Conv2D(8, 3, padding="same", groups=4)(x)
    block = keras.Sequential([keras.Input((15, 15, 8)),
                              keras.layers.Conv2D(8, 1),  # 225 * 8*8
                              keras.layers.SeparableConv2D(8, 3, padding="same")])  # 225 * (3*3*8 + 8*8)
    x = block(block(x))  # a nested model called twice counts twice
    x = keras.layers.Dense(4)(x)  # over 15 x 15 positions: 225 * 8*4
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1)(x)  # 4
    model = keras.Model(inputs, outputs)
    golden = 48600 + 32400 + 64800 + 2 * (14400 + 30600) + 7200 + 4
    assert flops.model_macs(model) == golden == 243004


def test_other_convolutions_and_a_shared_layer():
    inputs = keras.Input((10, 3))
    conv1d = keras.layers.Conv1D(3, 3, padding="same")  # 10 * 3*3*3 per call
    x = conv1d(conv1d(inputs))
    image = keras.Input((4, 4, 2))
    # Transposed: every one of the 4 x 4 input positions through a 3*3*3*2 kernel.
    y = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same")(image)
    model = keras.Model([inputs, image], [x, y])
    assert flops.model_macs(model) == 2 * 270 + 16 * 54


def test_unknown_spatial_size_is_an_error():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="fixed input size"):
        flops.model_macs(model)


def test_subclassed_model_without_a_graph_is_refused():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    model = Subclassed()
    model(keras.ops.zeros((1, 8, 8, 3)))  # built eagerly: no layer call is recorded
    with pytest.raises(ValueError, match="Functional"):
        flops.model_macs(model)


def test_train_flops_per_image():
    assert flops.train_flops_per_image(5_711_692_640) == 34_270_155_840.0


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """A CPU with settable flags, cores and clock (cpuinfo and cpufreq files)."""
    cpuinfo = tmp_path / "cpuinfo"
    max_freq = tmp_path / "cpuinfo_max_freq"  # absent unless a test writes it
    monkeypatch.setattr(machine, "CPUINFO", cpuinfo)
    monkeypatch.setattr(machine, "MAX_FREQ", max_freq)

    def set_cpu(flags, cores, mhz, max_khz=None):
        monkeypatch.setattr(machine, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(machine, "cpu_cores", lambda: cores)
        cpuinfo.write_text("".join(f"processor\t: {i}\ncpu MHz\t\t: {mhz}\n\n" for i in range(cores)))
        if max_khz is not None:
            max_freq.write_text(f"{max_khz}\n")
    return set_cpu


def test_cpu_peak_avx512_bf16(fake_cpu):
    fake_cpu({"avx2", "fma", "avx512f", "avx512_bf16"}, cores=2, mhz="2600.000")
    fp32 = flops.cpu_peak("float32")
    assert fp32["gflops"] == pytest.approx(332.8, rel=1e-12) and fp32["estimate"] is True
    assert fp32["basis"] == ("2 cores x 2.60 GHz x 16 fp32 lanes x 2 (FMA) x 2 FMA units (assumed), "
                             "nominal clock (turbo may exceed it)")
    assert flops.cpu_peak("mixed_bfloat16")["gflops"] == pytest.approx(665.6, rel=1e-12)
    assert flops.cpu_peak("mixed_float16")["gflops"] == pytest.approx(332.8, rel=1e-12)


def test_cpu_peak_avx2_uses_the_cpufreq_maximum(fake_cpu):
    fake_cpu({"avx2", "fma"}, cores=4, mhz="2000.000", max_khz=3500000)
    fp32 = flops.cpu_peak("float32")
    assert fp32["gflops"] == pytest.approx(448.0, rel=1e-12)
    assert "3.50 GHz x 8 fp32 lanes" in fp32["basis"] and "maximum clock" in fp32["basis"]
    bf16 = flops.cpu_peak("mixed_bfloat16")  # no bf16 instructions: the fp32 rate
    assert bf16["gflops"] == pytest.approx(448.0, rel=1e-12) and "no bf16" in bf16["basis"]


def test_cpu_peak_amx(fake_cpu):
    fake_cpu({"avx512f", "avx512_bf16", "amx_bf16"}, cores=2, mhz="2600.000")
    bf16 = flops.cpu_peak("mixed_bfloat16")
    assert bf16["gflops"] == pytest.approx(2 * 2.6 * 1024, rel=1e-12) and "AMX" in bf16["basis"]


def test_cpu_peak_rejects_unresolved_precision():
    with pytest.raises(ValueError, match="auto"):
        flops.cpu_peak("auto")


def test_gpu_peak_lookup():
    a100 = flops.gpu_peak("NVIDIA A100-SXM4-40GB", "mixed_bfloat16")
    assert a100["gflops"] == 312_000 and "A100" in a100["basis"]
    assert flops.gpu_peak("NVIDIA A100-SXM4-40GB", "float32")["gflops"] == 19_500
    assert flops.gpu_peak("NVIDIA A10", "mixed_float16")["gflops"] == 125_000
    assert flops.gpu_peak("NVIDIA H100 PCIe", "mixed_bfloat16")["gflops"] == 756_500
    assert flops.gpu_peak("nvidia l40s", "float32")["gflops"] == 91_600
    # No bf16 tensor cores on a T4: its fp32 figure.
    assert flops.gpu_peak("Tesla T4", "mixed_bfloat16")["gflops"] == 8_100
    assert flops.gpu_peak("Quantum Accelerator 9000", "float32") is None
    assert flops.gpu_peak("NVIDIA A10G", "float32") is None  # not the A10


def test_peak_on_cpu_without_measuring(monkeypatch, fake_cpu):
    monkeypatch.setattr(machine, "gpu_details", list)
    fake_cpu({"avx512f"}, cores=2, mhz="2600.000")
    result = flops.peak("float32", measure=False)
    assert result["gflops"] == result["estimate_gflops"] == pytest.approx(332.8, rel=1e-12)
    assert result["measured_gflops"] is None


def test_peak_on_gpus_sums_them(monkeypatch):
    monkeypatch.setattr(machine, "gpu_details", lambda: [{"name": "NVIDIA L4"}, {"name": "NVIDIA L4"}])
    assert flops.peak("mixed_bfloat16")["gflops"] == 242_000
    monkeypatch.setattr(machine, "gpu_details", lambda: [{"name": "NVIDIA L4"}, {"name": "Mystery GPU"}])
    assert flops.peak("mixed_bfloat16") is None


def test_percent_of_peak():
    assert flops.percent_of_peak(10.0, 3.42e10, 684.0) == pytest.approx(50.0)
    assert flops.percent_of_peak(10.0, 3.42e10, None) is None


def test_measured_matmul_peak_is_a_rate():
    rate = flops.measured_matmul_peak("float32", n=256, repeats=2)
    assert rate > 0 and math.isfinite(rate)
