"""The engine's typed configuration: one dataclass per command (records, a
training run with its model and input pipeline, a sweep, the bench), every
command-line option one field (``engine.options``), written next to every
output so any result can be re-run exactly. Each setting lives in one field
and each rule in one ``validate``, run before any work; the tables those
rules need (the models with their smallest input side, the augmentation
policies) live here too, below the layers that implement them. The named
studies are ``engine.presets``; storing and reading configs as JSON is
``engine.serialise``."""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.errors import UserError
from engine.presets import PRESETS
from engine.serialise import to_json

SPLITS = ("train", "val", "test")
RESIZE_METHODS = ("nearest", "bilinear", "area")
ENCODINGS = ("png", "raw", "jpeg")
SPLIT_BY = ("patient", "source")
LAYOUTS = ("auto", "split-class", "class", "list")
# The backbones ``engine.model.networks`` builds, with the smallest input side
# each accepts. Here, below the model layer, so that a config names an unknown
# model or too small an image in one line before records are built or a
# network is traced; the model layer keeps how each one preprocesses.
MODEL_MIN_SIDE = {
    "InceptionV3": 75,
    "ResNet50": 32,
    "EfficientNetV2B0": 32,
    "MobileNetV3Small": 32,
    "MobileNetV2": 32,
    "DenseNet121": 32,
    # A few conv + BatchNorm blocks: for tests and quick checks on a CPU.
    "TinyCNN": 16,
}
# The augmentation policies ``engine.data.augment`` implements.
AUGMENT_POLICIES = ("none", "paper", "randaugment", "augmix")


@dataclass(frozen=True)
class RecordsConfig:
    """How ``engine build-records`` turns an image folder into TFRecord shards.

    Attributes:
        src: the image folder (or the folder a list file's paths are relative to).
        out: the records folder to create.
        recipe: a known source's recipe (``engine recipes`` lists them), or
            the path of a recipe TOML file.
        layout: the folder's layout: split-class (SRC/split/class/*), class
            (SRC/class/**) or list (COVIDx-style list files); auto detects which.
        list_files: a list file (layout list) whose lines read ``patientId
            filename label source``; give it once per file.
        classes: the classes to keep, renamed and merged, as SRC=dst pairs:
            "COVID=covid,Normal=normal". Default: every class, as named.
        fractions: train,val,test fractions of the splits made here (summing to 1).
        split_by: how splits are made: by patient (grouped by patient when
            known) or by source (--test-source held out as the test split).
        test_source: the source held out as the test split by --split-by source.
        resplit: pool the folder's own splits and split again without leakage.
        patient_pattern: a regex whose named group ``patient`` finds the
            patient id in a file name (splits then keep each patient in one).
        source_pattern: a regex whose named group ``source`` finds the source
            (hospital, site) in a file name, for --split-by source.
        subset: train,val,test images to draw, stratified by class and
            seeded. Default: every image.
        image_size: side of the square images written, in pixels.
        resize: how images are resized once (nearest: as the paper's Keras
            loader did; area: the better choice when shrinking large images).
        encoding: how images are stored: png (lossless, smaller), raw (uint8 bytes) or jpeg.
        channels: channels stored; auto keeps 1 when every image is grayscale, else 3.
        seed: seed of every random choice (splits, subset, shard order).
        workers: decode processes; 0 decodes in this process. Default: all cores.
        allow_duplicates: keep identical files found in two splits (refused otherwise).
        dedupe: drop the later copies (val, test) of identical files found in two splits.
        overwrite: replace an existing OUT (atomically, once the build is done).
        name: dataset name that starts each shard's file name (a letter,
            then letters, digits or _).
        shard_mb: size cap of one shard, in MB.
        min_shards: shards per split at least, for parallel reads (when the
            split has examples enough).
        max_pixels: images with more pixels are rejected (a decompression-bomb guard).
        near_duplicate_bits: how many bits (of 256, and of 1024) two images'
            difference hashes at 16x16 and 32x32 may differ by for the pair
            to be reported as near-duplicates across splits.
    """

    src: Path | None = None
    out: Path | None = None
    recipe: str | None = None
    layout: str = "auto"
    list_files: tuple[Path, ...] = ()
    classes: str | None = None
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "patient"
    test_source: str | None = None
    resplit: bool = False
    patient_pattern: str | None = None
    source_pattern: str | None = None
    subset: tuple[int, int, int] | None = None
    image_size: int = 299
    resize: str = "nearest"
    encoding: str = "png"
    channels: str = "auto"
    seed: int = 0
    workers: int | None = None
    allow_duplicates: bool = False
    dedupe: bool = False
    overwrite: bool = False
    name: str = "chestxray"
    shard_mb: float = 100.0
    min_shards: int = 4
    max_pixels: int = 64_000_000
    near_duplicate_bits: tuple[int, int] = (10, 100)
    command: str = field(default="", compare=False)

    def validate(self) -> "RecordsConfig":
        """Checks every field; raises UserError with a one-line message."""
        if self.layout not in LAYOUTS:
            raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.resize not in RESIZE_METHODS:
            raise UserError(f"--resize must be one of {', '.join(RESIZE_METHODS)}, not {self.resize!r}")
        if self.encoding not in ENCODINGS:
            raise UserError(f"--encoding must be one of {', '.join(ENCODINGS)}, not {self.encoding!r}")
        if self.channels not in ("auto", "1", "3"):
            raise UserError(f"--channels must be auto, 1 or 3, not {self.channels!r}")
        if self.split_by not in SPLIT_BY:
            raise UserError(f"--split-by must be one of {', '.join(SPLIT_BY)}, not {self.split_by!r}")
        if not 32 <= self.image_size <= 4096:
            raise UserError(f"--image-size must be between 32 and 4096, not {self.image_size}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or self.fractions[0] <= 0 \
                or abs(sum(self.fractions) - 1) > 1e-6:
            raise UserError(f"--split needs three fractions summing to 1 with train > 0, "
                            f"not {','.join(map(str, self.fractions))}")
        if self.subset is not None and (len(self.subset) != 3 or any(n < 0 for n in self.subset)
                                        or self.subset[0] <= 0):
            raise UserError("--subset needs three counts train,val,test (e.g. 500,100,100)")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be >= 0, not {self.workers}")
        if self.shard_mb <= 0 or self.min_shards < 1:
            raise UserError("--shard-mb must be > 0 and --min-shards >= 1")
        if self.allow_duplicates and self.dedupe:
            raise UserError("--allow-duplicates and --dedupe exclude each other: pick one")
        return self

    def to_json(self) -> dict:
        return to_json(self)


@dataclass(frozen=True)
class PipelineConfig:
    """Input pipeline settings.

    Attributes:
        cache_mb: memory, in MB, to keep a split's decoded images in (the
            paper's 500 at 299 px take 45 MB); a larger split streams from the shards.
        shuffle_buffer: shuffle buffer, in images, of a split that streams
            (a kept split shuffles whole).
        data_service: the address of a TensorFlow data service dispatcher,
            to decode on other machines. Default: decode here.

    The order and augmentation seed is the run's (``TrainConfig.seed``),
    passed to ``engine.data.pipeline.dataset`` as its ``seed``.
    """

    # Fields earlier versions stored (``seed``, a copy of the run's seed):
    # ignored when a stored config is read or compared, so older run folders
    # still load and resume.
    RETIRED: ClassVar[tuple[str, ...]] = ("seed",)

    cache_mb: float = 2048.0
    shuffle_buffer: int = 2048
    data_service: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The network.

    Attributes:
        name: the backbone: InceptionV3 (the paper; 75 px or more), ResNet50,
            EfficientNetV2B0, MobileNetV3Small, MobileNetV2, DenseNet121, or
            TinyCNN (a few layers, for tests and quick checks).
        weights: the backbone's starting weights: imagenet (downloaded once
            by Keras), none (random), or the path of a weights file (a
            *_notop.h5 or .weights.h5 file).
        image_size: side of the square input images, in pixels; a size given
            here must match the records (a preset's or the default adapts to them).
        channels: input channels, as stored in the records (set from them).
        hidden: units of the head's hidden relu layer (the paper's head has one).
        dropout: dropout rate before the sigmoid output.
        freeze_base: train the head only: the whole backbone is frozen (its
            BatchNorm in inference mode, as Keras does).
        trainable_from: freeze the backbone's layers before the one of this name.
        bn_momentum: momentum of every backbone BatchNorm (set from the
            training config's); unset keeps the network's own.
        fused_bn: run BatchNorm on TensorFlow's fused kernel, as Keras 2 did
            (measured 13 % faster per InceptionV3 step on a CPU in float32,
            34 % in mixed_bfloat16).
    """

    name: str = "InceptionV3"
    weights: str = "imagenet"
    image_size: int = 299
    channels: int = 1
    hidden: int = 256
    dropout: float = 0.2
    freeze_base: bool = False
    trainable_from: str | None = None
    bn_momentum: float | None = None
    fused_bn: bool = True

    def validate(self) -> "ModelConfig":
        """Checks the network's fields; raises UserError with a one-line message.
        Also run by ``engine.model.networks`` on the config it builds: an image
        size taken from the records is only known once they are read."""
        if self.name not in MODEL_MIN_SIDE:
            raise UserError(f"unknown --model {self.name!r}; choose one of {', '.join(MODEL_MIN_SIDE)}")
        if self.image_size < MODEL_MIN_SIDE[self.name]:
            raise UserError(f"{self.name} needs --image-size >= {MODEL_MIN_SIDE[self.name]}, "
                            f"not {self.image_size}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout must be in [0, 1), not {self.dropout}")
        return self


OPTIMIZERS = ("adam", "sgd", "nesterov", "rmsprop", "nadam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
SWITCHES = ("auto", "on", "off")
SELECTS = ("best", "last")
BN_STATS = ("moving", "precise")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (one trial of a study).

    Attributes:
        records: records folder; unset: the embedded synthetic set at the
            model's image size.
        subset: with the embedded set: train,val,test images to draw from
            its 500,100,100 (stratified, seeded). Default: all of it.
        out: run folder (config, history, metrics, models, TensorBoard logs).
        model: the network.
        data: the input pipeline (its order and augmentation follow the seed).
        optimizer: the optimizer: adam (the paper), sgd, nesterov, rmsprop, nadam or adamw.
        lr: learning rate (the peak, with a schedule).
        batch_size: images per step, over all devices (each of R devices gets batch / R).
        epochs: epochs to train.
        schedule: learning-rate schedule: constant (the paper), cosine, or
            step (x0.1 at 50 % and 75 % of training).
        warmup_epochs: linear warm-up from 0, in epochs.
        augment: augmentation: none, paper (the paper's Keras
            ImageDataGenerator transform), randaugment or augmix.
        augment_placement: where augmentation runs: data (in the input
            pipeline) or step (inside the compiled training step); auto:
            step on a GPU, data on a CPU.
        precision: number format of training: float32, mixed_float16,
            mixed_bfloat16, or auto (by GPU generation; on a CPU the fastest
            whose losses match float32's, measured once per machine).
        xla: compile the training step with XLA: on, off, or auto (on for
            GPUs, measured on a CPU).
        class_weight: class weights in the loss: none, or auto (inverse
            class frequency, for imbalanced folders).
        positive_class: the class whose sensitivity and AUC are reported;
            auto: covid if a class is so named, else the class not named
            like normal, negative, healthy or no finding, else label 0.
        threshold: decision threshold: a number in (0, 1), or val-youden
            (chosen on validation, applied to test).
        bn_momentum: the backbone's BatchNorm momentum: keras (the
            network's own, 0.99), a number, or auto (the network's own with
            pretrained weights; from scratch tied to the steps per epoch).
        bn_stats: the BatchNorm statistics validation and scoring use:
            moving (the averages training kept, as the paper) or precise
            (estimated again before each validation from up to 1,000
            un-augmented training images).
        select: the model a finished run is scored and used with: best
            (lowest val loss, the least overfit) or last (the paper's "model
            trained at epoch 20"); evaluate and predict use it too.
        seed: seed of data order, augmentation and initial weights.
        deterministic: also make TensorFlow's kernels deterministic (slower).
        bootstrap: resamples for the test metrics' 95 % intervals.
        keep_checkpoints: keep a finished run's resume checkpoint (ckpt/,
            about 350 MB for InceptionV3), removed by default once it ends.
    """

    records: Path | None = None
    subset: tuple[int, int, int] | None = None
    out: Path | None = None
    model: ModelConfig = ModelConfig()
    data: PipelineConfig = PipelineConfig()
    optimizer: str = "adam"
    lr: float = 1e-4
    batch_size: int = 5
    epochs: int = 20
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    augment: str = "paper"
    augment_placement: str = "auto"
    precision: str = "auto"
    xla: str = "auto"
    class_weight: str = "none"
    positive_class: str = "auto"
    threshold: str = "0.5"
    bn_momentum: str = "auto"
    bn_stats: str = "moving"
    select: str = "best"
    seed: int = 0
    deterministic: bool = False
    bootstrap: int = 2000
    # Not compared on resume: keeping the checkpoint changes no result.
    keep_checkpoints: bool = field(default=False, metadata={"resumes": True})

    def validate(self) -> "TrainConfig":
        """Checks every field; raises UserError with a one-line message."""
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, not {self.lr}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, not {self.batch_size}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be >= 1, not {self.epochs}")
        for name, value, choices in (("--optimizer", self.optimizer, OPTIMIZERS),
                                     ("--schedule", self.schedule, SCHEDULES),
                                     ("--precision", self.precision, PRECISIONS),
                                     ("--xla", self.xla, SWITCHES),
                                     ("--class-weight", self.class_weight, ("none", "auto")),
                                     ("--augment", self.augment, AUGMENT_POLICIES),
                                     ("--augment-placement", self.augment_placement, ("auto", "data", "step")),
                                     ("--select", self.select, SELECTS),
                                     ("--bn-stats", self.bn_stats, BN_STATS)):
            if value not in choices:
                raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if self.threshold != "val-youden":
            try:
                if not 0 < float(self.threshold) < 1:
                    raise ValueError
            except ValueError:
                raise UserError(f"--threshold must be a number in (0, 1) or val-youden, "
                                f"not {self.threshold!r}") from None
        if self.bn_momentum not in ("auto", "keras"):
            try:
                if not 0 <= float(self.bn_momentum) < 1:
                    raise ValueError
            except ValueError:
                raise UserError(f"--bn-momentum must be auto, keras or a number in [0, 1), "
                                f"not {self.bn_momentum!r}") from None
        if self.deterministic and self.xla == "on":
            raise UserError("--deterministic and --xla on exclude each other: Keras compiles no XLA step "
                            "with deterministic kernels; use --xla off or auto")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise UserError(f"--warmup-epochs must be in [0, epochs), not {self.warmup_epochs}")
        self.model.validate()
        if self.subset is not None:
            full = (500, 100, 100)  # the embedded set (engine.data.synthetic.DEFAULT_COUNTS)
            if len(self.subset) != 3 or self.subset[0] < 1 or self.subset[1] < 1 or \
                    any(not 0 <= n <= most for n, most in zip(self.subset, full)):
                raise UserError(f"--subset needs train,val,test counts within the embedded set's 500,100,100 "
                                f"(train and val >= 1), not {','.join(map(str, self.subset))}")
        return self

    def to_json(self) -> dict:
        return to_json(self)



AXES = ("lr", "batch", "grid", "optimizer")
# How a sweep's split replicates are drawn from the pool of the records'
# train and val examples (engine.data.resample).
SPLIT_MODES = ("holdout", "kfold")
BUDGETS = ("epochs", "steps")
LR_SCALINGS = ("none", "linear", "sqrt")
# The training fields each trial of a sweep sets from the sweep's own fields
# (lrs, batch_sizes, optimizers, seed + repeat): a sweep's base leaves them
# unread, and neither stores nor compares them.
TRIAL_FIELDS = ("lr", "batch_size", "optimizer", "seed")


@dataclass(frozen=True)
class SweepConfig:
    """One study (``engine compare``): the axis, its settings, and the training
    config they vary.

    Attributes:
        axis: what the study varies: lr, batch, grid (lr x batch) or optimizer.
        preset: the settings of every option not given: quick (minutes on a
            CPU), robust (quick's images, a paper axis, 10 splits x 1 seed)
            or paper (the study as published).
        lrs: learning rates tried on the lr and grid axes (the other axes train at one).
        batch_sizes: batch sizes tried on the batch and grid axes (the other axes train at one).
        optimizers: optimizers tried on the optimizer axis (adam on the others).
        repeats: runs of each setting: with --splits not given, --repeats N
            >= 2 draws N splits with one seed each (see splits); with --splits
            given, the seeds each split trains: --seed, --seed + 1, ...
        seed: the seed of each setting's first run.
        splits: train/val splits every setting trains on (each with every
            seed); 1 trains on the records' own split; K >= 2 draws K splits
            from the pool of the records' train and val images, by patient and
            stratified by class (the test split never joins), and compares
            settings across splits. Not given, as many splits as --repeats
            with one seed each (1 with --repeats 1), so that comparisons speak
            of the task and not of one validation set.
        split_mode: how the K splits are drawn: holdout (K independent
            hold-outs, each the size of the records' own train and val) or
            kfold (every pool image in exactly one split's val).
        split_sizes: holdout only: train,val images of each split, drawn
            from a larger pool (nearly independent samples of the task).
            Default: the records' own train and val sizes.
        split_seed: the seed the splits are drawn with: sweeps on the same
            records with the same split options share their splits.
        margin: a difference in the ranking statistic (validation loss) too
            small to matter, stated before training (stored in sweep.json):
            the report then says which settings are equivalent within it and
            which is best within it (two one-sided tests; non-inferiority).
            Default: none.
        budget: what every batch size trains alike: epochs (as the paper,
            so larger batches make fewer updates) or steps (epochs scaled so
            every batch size makes the same number of updates).
        lr_scaling: on the batch axis, the learning rate times (batch /
            smallest batch) with linear, or its square root with sqrt; none
            keeps it.
        shard: run the i-th of n fixed slices of the trials (one per machine).
        trial: run one trial only: its index (--dry-run lists them), its
            name, or auto: the index a job array gives this task
            ($SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX). Default: every trial.
        base: the training config every trial starts from; each trial sets
            its ``TRIAL_FIELDS`` (lr, batch_size, optimizer, seed) from the
            fields above, so the base's own values of them are never read.
    """

    axis: str = "lr"
    preset: str = "quick"
    lrs: tuple[float, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    optimizers: tuple[str, ...] = ()
    repeats: int = 1
    seed: int = 0
    splits: int = 1
    split_mode: str = "holdout"
    split_sizes: tuple[int, int] | None = None
    split_seed: int = 0
    margin: float | None = None
    budget: str = "epochs"
    lr_scaling: str = "none"
    shard: tuple[int, int] = (0, 1)
    trial: str = ""
    base: TrainConfig = field(default=TrainConfig(), metadata={"per_trial": TRIAL_FIELDS})

    def validate(self) -> "SweepConfig":
        """Checks every field; raises UserError with a one-line message."""
        for name, value, choices in (("--axis", self.axis, AXES), ("--preset", self.preset, tuple(PRESETS)),
                                     ("--budget", self.budget, BUDGETS),
                                     ("--split-mode", self.split_mode, SPLIT_MODES),
                                     ("--lr-scaling", self.lr_scaling, LR_SCALINGS)):
            if value not in choices:
                raise UserError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise UserError(f"every learning rate must be > 0, got {', '.join(map(str, self.lrs))}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UserError(f"every batch size must be >= 1, got {', '.join(map(str, self.batch_sizes))}")
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad or not self.optimizers:
            raise UserError(f"--optimizers takes a comma-separated list of {', '.join(OPTIMIZERS)}, "
                            f"not {','.join(self.optimizers)!r}")
        if self.repeats < 1:
            raise UserError(f"--repeats must be >= 1, not {self.repeats}")
        if self.splits < 1:
            raise UserError(f"--splits must be >= 1 (1: the records' own split), not {self.splits}")
        if self.margin is not None and not (math.isfinite(self.margin) and self.margin > 0):
            raise UserError(f"--margin must be a difference in validation loss above 0, not {self.margin}")
        if self.split_sizes is not None and (len(self.split_sizes) != 2 or min(self.split_sizes) < 1):
            raise UserError("--split-sizes needs two counts train,val (e.g. 500,100), each >= 1")
        if self.splits == 1 and (self.split_sizes is not None or self.split_mode != "holdout"):
            raise UserError("--split-sizes and --split-mode need --splits 2 or more (1 trains on the records' "
                            "own split)")
        if self.split_mode == "kfold" and self.split_sizes is not None:
            raise UserError("--split-sizes is for --split-mode holdout: k-fold's sizes follow from K "
                            "(val = pool / K)")
        index, count = self.shard
        if not 0 <= index < count:
            raise UserError(f"--shard must be i/n with 0 <= i < n, not {index}/{count}")
        self.base.validate()
        return self

    def to_json(self) -> dict:
        return to_json(self)


BENCH_MODES = ("input", "step", "e2e")
# A scaled study timed whole, both stacks (engine.bench.study); run on its own.
STUDY_MODE = "study"


@dataclass(frozen=True)
class BenchConfig:
    """One ``engine bench`` run: every combination of batch size, precision and
    XLA, in the modes asked, with the paper's stack alongside.

    Attributes:
        records: records folder; unset: the embedded synthetic set at ``image_size``.
        out: folder for ``bench.json`` and ``bench.png``.
        batch_sizes: batch sizes to measure (images per step, over all devices).
        image_size: image side in pixels (must match the records when given).
        precisions: number formats to measure, comma-separated: float32,
            mixed_float16, mixed_bfloat16, auto (every candidate auto could
            choose on this device, its pick marked).
        xlas: XLA settings to measure, comma-separated: off, on, auto (as
            for --precision).
        modes: what to measure: input (records to augmented batches on the device, no model),
            step (the compiled training step on batches already there), e2e
            (the real pipeline feeding the real step), all (those three), or
            study (whole trials, scaled; given alone).
        paper_stack: also time the paper's stack (a tf_keras
            ImageDataGenerator feeding a float32 tf_keras InceptionV3; pip
            install -e '.[paper]'). Default: when tf_keras is installed.
        repeats: timed repeats of every measurement, interleaved across them (at least 3).
        step_images: images per timed repeat of a training mode (whole steps, at least 2).
        input_images: images per timed repeat of the engine's input pipeline
            (the paper stack's, 25x slower, times an eighth of it).
        outlier_ratio: a repeat slower or faster than this factor against the
            median of the others is flagged and left out.
        model: the backbone timed (its weights are random: they do not change the cost).
        augment: the augmentation policy timed in the input and e2e modes.
        lrs: study mode: the learning rates trained at the first batch size
            (the other batch sizes train at the first rate).
        epochs: study mode: epochs per trial (at least 2: the first pays compilation).
        train_images: study mode, embedded set: training images per trial;
            0: the most, up to the paper's 500, that fit --budget-minutes.
        val_images: study mode, embedded set: validation images per trial;
            0: the most, up to the paper's 100, that fit --budget-minutes.
        budget_minutes: study mode: the minutes the embedded set's study is sized to.
        parallel: study mode: also run the engine's trials as engine compare
            --parallel N (a row of its own: it cannot be interleaved); 1: not.
    """

    records: Path | None = None
    out: Path = Path("bench")
    batch_sizes: tuple[int, ...] = (5, 10, 15)
    image_size: int = 299
    precisions: tuple[str, ...] = ("float32", "auto")
    xlas: tuple[str, ...] = ("off", "auto")
    modes: tuple[str, ...] = BENCH_MODES
    paper_stack: bool | None = None
    repeats: int = 3
    step_images: int = 40
    input_images: int = 1280
    outlier_ratio: float = 1.5
    model: str = "InceptionV3"
    augment: str = "paper"
    lrs: tuple[float, ...] = (1e-4, 1e-5)
    epochs: int = 2
    train_images: int = 0
    val_images: int = 0
    budget_minutes: float = 30.0
    parallel: int = 1

    def validate(self) -> "BenchConfig":
        """Checks every field; raises UserError with a one-line message."""
        for name, values, choices in (("--precision", self.precisions, PRECISIONS), ("--xla", self.xlas, SWITCHES),
                                      ("--mode", self.modes, BENCH_MODES + (STUDY_MODE,))):
            bad = [v for v in values if v not in choices]
            if bad or not values:
                raise UserError(f"{name} takes a comma-separated list of {', '.join(choices)}, "
                                f"not {','.join(values)!r}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"--batch-sizes must be whole numbers >= 1, not {self.batch_sizes}")
        ModelConfig(name=self.model, image_size=self.image_size).validate()
        if self.repeats < 3:
            raise UserError(f"--repeats must be >= 3 (a median and an outlier check need them), not {self.repeats}")
        if self.step_images < 1 or self.input_images < 1:
            raise UserError("images per repeat must be >= 1")
        if not self.outlier_ratio > 1:
            raise UserError(f"--outlier-ratio must be > 1, not {self.outlier_ratio}")
        if self.augment not in AUGMENT_POLICIES:
            raise UserError(f"--augment must be one of {', '.join(AUGMENT_POLICIES)}, not {self.augment!r}")
        if STUDY_MODE in self.modes:
            if len(self.modes) > 1:
                raise UserError("--mode study runs on its own: give it alone")
            if self.epochs < 2:
                raise UserError(f"--epochs must be >= 2 in study mode (the first pays compilation), not {self.epochs}")
            if not self.lrs or any(not lr > 0 for lr in self.lrs):
                raise UserError("--lrs takes comma-separated learning rates > 0")
            if self.train_images < 0 or self.val_images < 0 or self.parallel < 1 or not self.budget_minutes > 0:
                raise UserError("--train-images/--val-images must be >= 0, --parallel >= 1, --budget-minutes > 0")
            if self.train_images and self.train_images < 2 * max(self.batch_sizes):
                raise UserError(f"--train-images {self.train_images} is less than two batches of "
                                f"{max(self.batch_sizes)}")
        return self

    def to_json(self) -> dict:
        return to_json(self)
