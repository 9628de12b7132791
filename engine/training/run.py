"""The training door: ``prepare(cfg) -> Run``, then ``Run.fit()`` (``engine
train``, every trial of a sweep), ``Run.step()`` (lr-find, the bench),
``Run.batches()`` and ``Run.evaluate()``.

``prepare`` resolves everything a run needs before its first step: the
manifest of its records (built beforehand: training never builds records),
the positive class, precision, XLA and BatchNorm momentum (``numerics``,
with their reasons), the tf.distribute strategy and the compiled classifier,
which the runs given one ``Trainer`` share while their graph is the same
(the trials of a sweep).

A run folder holds ``config.json`` (fully resolved, re-runnable),
``data.json`` (label map and image format of the records), ``history.csv``,
``metrics.json``, ``best.keras`` / ``last.keras``, TensorBoard logs under
``tb/`` and an atomic per-epoch checkpoint under ``ckpt/``. Running the same
config on the same folder resumes from the last finished epoch with the same
continuation: weights, optimizer state, epoch, data order and augmentation
keys all come back.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import tensorflow as tf

from engine import machine
from engine.config import TrainConfig
from engine.data import pipeline
from engine.data.manifest import check_batch_size, load_manifest
from engine.errors import DamagedState, UserError
from engine.io import atomic_json, move_aside, read_json, remove_temp_files
from engine.results import metrics, runs
from engine.results.runs import STATUS_DIVERGED, STATUS_DONE, read_history
from engine.serialise import differences, dump
from engine.training import distribute, pace, precise_bn
from engine.training.callbacks import EpochPrinter, RunRecorder
from engine.training.checkpoint import CHECKPOINT, load_checkpoint, read_state, remove_checkpoint, save_model
from engine.training.classifier import Classifier, augment_placement
from engine.training.evaluation import eval_batch_size, evaluate_run, predict_split
from engine.training.numerics import Numerics, choose
from engine.training.optim import set_rate
from engine.training.trainer import Trainer



@dataclass
class Run:
    """One prepared run: its resolved config, data, numerics and compiled
    classifier, and the ``Trainer`` that set it up."""

    cfg: TrainConfig
    records: Path
    manifest: dict
    positive: int  # label of the positive class
    numerics: Numerics
    steps_per_epoch: int
    distribution: tf.distribute.Strategy
    classifier: Classifier
    trainer: Trainer
    on_damage: str = "restart"  # or "raise" (see ``prepare``)
    processes: int = 1  # trial processes sharing the machine (see ``prepare``)

    @property
    def placement(self) -> str:
        return augment_placement(self.cfg.augment_placement)

    def batches(self, split: str, *, batch_size: int | None = None, start_epoch: int = 0,
                end_epoch: int | None = None) -> tf.data.Dataset:
        """The batches of ``split`` as this run reads them (see ``input_batches``)."""
        return input_batches(self.cfg, self.manifest, split, batch_size=batch_size, start_epoch=start_epoch,
                             end_epoch=end_epoch, trainer=self.trainer)

    def step(self, images, labels, lr: float | None = None) -> float:
        """One compiled training step (augmentation included where it is placed
        in the step), at learning rate ``lr`` if given (a constant schedule's
        rate, set as every trial's is: ``optim.set_rate``); returns the loss,
        on the host (a sync: the caller wants it now)."""
        if lr is not None:
            set_rate(self.classifier.optimizer, lr)
        logs = self.classifier.train_on_batch(images, tf.cast(labels, tf.float32), return_dict=True)
        return float(logs["loss"])

    def evaluate(self, split: str, threshold: float = 0.5) -> dict:
        """Metrics of the current weights on ``split``, with bootstrap intervals."""
        net = self.classifier.net
        batches = self.batches(split, batch_size=self.eval_batch_size(split))
        p, y = predict_split(net, batches, self.trainer.forward(net))
        return metrics.summary(p, y, self.positive, threshold, self.cfg.bootstrap, self.cfg.seed,
                               label_map=self.manifest["label_map"])

    def validate(self, split: str = "val") -> int:
        """The validation pass training runs each epoch (Keras' compiled test
        step at the evaluation batch), on ``split``; returns the images scored."""
        self.classifier.evaluate(self.batches(split, batch_size=self.eval_batch_size(split)), verbose=0)
        return self.manifest["splits"][split]["count"]

    def precise_bn(self) -> dict:
        """Estimates every trainable BatchNorm layer's statistics again from
        un-augmented training images (``precise_bn``); returns what it used."""
        count = self.manifest["splits"]["train"]["count"]
        batches = precise_bn.estimation_batches(count, self.cfg.batch_size)
        images = pipeline.dataset(self.records, "train", self.cfg.batch_size, training=False,
                                  config=self.cfg.data, manifest=self.manifest).take(batches)
        net = self.classifier.net
        return precise_bn.reestimate(net, images, moments=self.trainer.moments(net))

    def bn_stats(self) -> dict:
        """What ``metrics.json`` says of the statistics validation and scoring used."""
        if self.cfg.bn_stats == "moving":
            return {"value": "moving", "reason": "the moving averages training kept"}
        count = self.manifest["splits"]["train"]["count"]
        images = precise_bn.estimation_batches(count, self.cfg.batch_size) * self.cfg.batch_size
        return {"value": "precise", "images": images,
                "reason": f"estimated again before each validation from {images} un-augmented training images"}

    def fit(self, *, callbacks=(), quiet: bool = False) -> dict:
        """Trains (or resumes) the run in ``cfg.out``; returns its ``metrics.json`` content.

        A diverging run (NaN or Inf loss or weights) stops and is returned with
        status ``diverged`` and the epoch, not raised.
        """
        cfg = self.cfg
        if cfg.out is None:
            raise UserError("training needs --out RUN_FOLDER")
        run = distribute.output_folder(cfg.out)
        run.mkdir(parents=True, exist_ok=True)
        remove_temp_files(run, run / CHECKPOINT)  # of writes a kill interrupted
        finished = runs.finished_metrics(run)
        if finished is not None:  # its checkpoint may be gone: nothing to resume, nothing to redo
            return finished
        dump(cfg, run / runs.CONFIG)
        atomic_json(run / runs.DATA, self.data_description())
        start_epoch, history, best = self.resume_point(run)
        # --bn-stats precise: the statistics are estimated again as each
        # validation begins, so the best and last models carry them too.
        recorder = RunRecorder(run, self.classifier, self.positive, history, self.steps_per_epoch, cfg.batch_size,
                               best=best, before_validation=self.precise_bn if cfg.bn_stats == "precise" else None)
        # Keras keeps the traced step on the classifier: a run that reuses it
        # (a sweep's later trial) records its first step apart (training.pace).
        compiles = self.classifier.train_function is None
        start = time.perf_counter()
        if start_epoch < cfg.epochs:
            self.train_epochs(run, start_epoch, recorder, callbacks, quiet)
        seconds = time.perf_counter() - start
        self.record_session_pace(run, history[start_epoch:], compiles)
        saving = time.perf_counter()
        status = STATUS_DIVERGED if recorder.diverged is not None else STATUS_DONE
        chosen = self.save_models(run, history, recorder.best_weights, status == STATUS_DONE)
        save_seconds = time.perf_counter() - saving
        result = {"status": status, "epochs_done": len(history), "seconds_this_session": round(seconds, 2),
                  "final_save_seconds": round(save_seconds, 2),
                  "first_step_seconds": None if recorder.first_step is None else round(recorder.first_step, 2),
                  **self.training_settings()}
        if status == STATUS_DIVERGED:
            result["diverged_at_epoch"] = recorder.diverged + 1
            result["reason"] = divergence_reason(recorder.diverged_reason, recorder.diverged + 1,
                                                 self.numerics.precision.value)
        else:
            # Scored with the selected model, its threshold chosen on its own val predictions;
            # its per-image scores saved beside metrics.json (scores-val.csv, scores-test.csv).
            result.update(chosen)
            net = self.classifier.net
            result.update(evaluate_run(cfg, net, self.records, self.manifest, self.positive, self.eval_batch_size,
                                       scores_to=run, forward=self.trainer.forward(net)))
        runs.write_metrics(run, result)
        if not cfg.keep_checkpoints:  # finished: the ~350 MB that resumed it is no longer needed
            remove_checkpoint(run)
        return result

    def data_description(self) -> dict:
        """What ``data.json`` says of the records the run reads."""
        labels = self.manifest["label_map"]
        return {"records": str(self.records), "label_map": labels,
                "positive_class": next(name for name, label in labels.items() if label == self.positive),
                "image_size": self.manifest["image_size"], "channels": self.manifest["channels"],
                "resize": self.manifest["resize"],
                "counts": {s: v["count"] for s, v in self.manifest["splits"].items()}}

    def resume_point(self, run: Path) -> tuple[int, list[dict], tuple[int, list] | None]:
        """``restore``, or from epoch 0 with a damaged state set aside (raised
        instead with ``on_damage="raise"``)."""
        try:
            return self.restore(run)
        except DamagedState as err:
            if self.on_damage == "raise":
                raise
            restart_damaged(run, err, keep=(runs.CONFIG, runs.DATA))
            return 0, [], None

    def train_epochs(self, run: Path, start_epoch: int, recorder: RunRecorder, callbacks, quiet: bool) -> None:
        """Keras' fit from ``start_epoch`` to the last epoch, validating each."""
        cfg = self.cfg
        class_weight = class_weights(self.manifest) if cfg.class_weight == "auto" else None
        try:
            self.classifier.fit(
                self.batches("train", start_epoch=start_epoch), epochs=cfg.epochs, initial_epoch=start_epoch,
                steps_per_epoch=self.steps_per_epoch,
                validation_data=self.batches("val", batch_size=self.eval_batch_size("val")),
                class_weight=class_weight, verbose=0, shuffle=False,
                callbacks=[recorder, keras.callbacks.TensorBoard(str(run / "tb"), profile_batch=0),
                           EpochPrinter(cfg.epochs, quiet), *callbacks])
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
            # A damaged shard surfaces as a bare TensorFlow error without a
            # file name: find the file and say so (verify raises UserError).
            for split in ("train", "val"):
                pipeline.verify(self.records, split, self.manifest)
            raise
        finally:
            recorder.writer.wait()  # an interrupted fit still leaves its last checkpoint whole

    def record_session_pace(self, run: Path, session: list[dict], compiled: bool) -> None:
        """Keeps the epochs of this session (``session``, the history's) as
        what this machine measured, for later estimates (--dry-run, the bench):
        those of a run on one replica that writes its own folder."""
        if session and run == self.cfg.out and self.distribution.num_replicas_in_sync == 1:
            pace.record_history(self.pace_shape(), session, self.manifest["splits"]["val"]["count"], "a training run",
                                compiled=compiled)

    def training_settings(self) -> dict:
        """What ``metrics.json`` says of how the run trained: its numerics,
        BatchNorm statistics, augmentation placement, threads and machine."""
        return {"precision": {"value": self.numerics.precision.value, "reason": self.numerics.precision.reason},
                "xla": {"value": self.numerics.xla.value, "reason": self.numerics.xla.reason},
                "bn_momentum": self.numerics.bn_momentum,
                "bn_momentum_reason": self.numerics.bn_reason, "bn_stats": self.bn_stats(),
                "augment_placement": self.placement,
                # Left at TensorFlow's defaults (0 = one per core): no setting
                # measured faster (benchmarks/RESULTS.md, thread pools).
                "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
                "steps_per_epoch": self.steps_per_epoch, "machine": machine.describe()}

    def restore(self, run: Path) -> tuple[int, list[dict], tuple[int, list] | None]:
        """Where the run continues from: its checkpoint (epochs done, history,
        best weights), or for a finished run whose ``metrics.json`` is damaged
        and whose checkpoint is gone, its saved model and ``history.csv`` (the
        metrics are then scored anew). Damage raises ``DamagedState``."""
        damaged = None
        if (run / runs.METRICS).is_file():
            try:
                runs.read_metrics(run)
            except DamagedState as err:
                damaged = err
                move_aside(run / runs.METRICS)
        state = load_checkpoint(run, self.classifier)
        if damaged is None or state[0] > 0:
            return state
        history = read_history(run)
        if len(history) != self.cfg.epochs or not (run / "last.keras").is_file():
            raise DamagedState(damaged.path, f"{damaged.what}; no finished model and history to rebuild it from")
        try:
            weights = keras.models.load_model(run / "last.keras", safe_mode=True, compile=False).get_weights()
        except Exception as err:  # noqa: BLE001 - any failure to read the file is damage
            raise DamagedState(run / "last.keras", f"cannot be loaded: {str(err).splitlines()[0][:200]}") from None
        if [w.shape for w in weights] != [tuple(w.shape) for w in self.classifier.net.weights]:
            raise DamagedState(run / "last.keras", "holds another model")
        self.classifier.net.set_weights(weights)
        return len(history), history, None

    def pace_shape(self) -> pace.Shape:
        """This run's shape as the time estimator knows it (``training.pace``),
        including how many trial processes share the machine with it."""
        return pace.Shape(self.cfg.model.name, self.cfg.model.image_size, self.manifest["channels"],
                          self.cfg.batch_size, self.numerics.precision.value, self.numerics.xla.value,
                          processes=self.processes)

    def eval_batch_size(self, split: str) -> int:
        """The batch ``split`` is scored at: larger than training's where that
        is faster (see ``evaluation.eval_batch_size``); results do not depend on it."""
        return eval_batch_size(self.manifest["splits"][split]["count"], self.cfg.batch_size)

    def save_models(self, run: Path, history: list[dict], best: tuple[int, list] | None, finished: bool) -> dict:
        """Writes ``best.keras`` (from the best weights kept on the host; for a
        finished run only with ``--select best``) and, for a finished run,
        ``last.keras``; leaves the weights of the model ``cfg.select`` names in
        the network and says which it is (``best``: the first epoch of lowest
        val loss). Returns {} for an unfinished run."""
        net = self.classifier.net
        last = history[-1]["epoch"] if history else 0
        last_weights = None
        if finished:
            save_model(net, run / "last.keras")
        if finished and self.cfg.select == "last":  # scored with last.keras: a second model is 90 MB of nothing
            (run / "best.keras").unlink(missing_ok=True)
            best = None
        if best is not None and best[0] == last and finished:
            shutil.copyfile(run / "last.keras", run / ".best.copy.keras")  # the same model: no second save
            (run / ".best.copy.keras").replace(run / "best.keras")
        elif best is not None:
            last_weights = net.get_weights()
            net.set_weights(best[1])
            save_model(net, run / "best.keras")
        if not finished:
            return {}
        # The network now holds the best weights if they differ from the last.
        scored = [h for h in history if h.get("val_loss") is not None]
        if self.cfg.select == "last" or not scored:
            if last_weights is not None:
                net.set_weights(last_weights)
            note = "" if self.cfg.select == "last" else "; no finite val loss to choose a best by"
            return {"model": f"last (epoch {last}{note})", "model_file": "last.keras"}
        chosen = min(scored, key=lambda h: h["val_loss"])
        if best is None or best[0] != chosen["epoch"]:
            # A checkpoint from before best weights were kept in it: best.keras has them.
            weights = keras.models.load_model(run / "best.keras", safe_mode=True, compile=False).get_weights()
            net.set_weights(weights)
        return {"model": f"best (epoch {chosen['epoch']}, lowest val loss)", "model_file": "best.keras"}


def input_batches(cfg: TrainConfig, manifest: dict, split: str, *, batch_size: int | None = None,
                  start_epoch: int = 0, end_epoch: int | None = None,
                  trainer: Trainer | None = None) -> tf.data.Dataset:
    """The batches training reads (``train``: epochs ``start_epoch`` to
    ``end_epoch``, default the run's last, shuffled and augmented by (seed,
    epoch), augmented in tf.data where the augmentation is placed there) or
    evaluation reads (other splits: one ordered pass); ``cfg`` resolved.
    ``trainer``: whose augmentation function tf.data calls (default: a new one)."""
    training = split == "train"
    augment_fn = (trainer or Trainer()).pipeline_augment_fn(cfg, manifest) if training else None
    return pipeline.dataset(cfg.records, split, batch_size or cfg.batch_size, training=training,
                            config=cfg.data, seed=cfg.seed, manifest=manifest, start_epoch=start_epoch,
                            end_epoch=end_epoch or (cfg.epochs if training else None), augment_fn=augment_fn)


def resolve(cfg: TrainConfig, quiet: bool = False, size_given: bool = False) -> tuple[TrainConfig, dict, str]:
    """``cfg`` checked and completed from its records: image size, channels
    and the positive class's name; with the manifest and why that class.
    The records must exist: the layers above training resolve them (the
    embedded set included) before calling it. ``size_given``: the image size
    was set by the user, so records of another size are an error (a
    default's or preset's size adapts to them)."""
    cfg.validate()
    if cfg.records is None:
        raise UserError("no records folder: build records with `engine build-records` or give the records "
                        "folder (RECORDS)")
    folder = Path(cfg.records)
    manifest = load_manifest(folder)
    check_image_size(cfg.model.image_size, manifest, folder, size_given, quiet)
    if cfg.subset is not None and \
            tuple(manifest["splits"].get(s, {}).get("count", 0) for s in ("train", "val", "test")) != cfg.subset:
        # (a resolved config names the embedded subset's own folder: that passes)
        raise UserError(f"--subset draws from the embedded set; for {folder} build records with "
                        f"engine build-records ... --subset {','.join(map(str, cfg.subset))}")
    positive, why = positive_class(cfg.positive_class, manifest["label_map"], folder)
    cfg = replace(cfg, records=folder, positive_class=positive,
                  model=replace(cfg.model, image_size=manifest["image_size"][0], channels=manifest["channels"]))
    for split in ("train", "val"):
        if split not in manifest["splits"]:
            raise UserError(f"{folder} has no {split} split; rebuild with a val fraction (--split)")
    check_batch_size(cfg.batch_size, manifest, split="train")
    return cfg, manifest, why


def check_image_size(size: int, manifest: dict, folder: Path, given: bool, quiet: bool = True) -> None:
    """Records hold one image size: a size the user gave that differs is an
    error; another (a default's, a preset's) adapts, with a line saying so."""
    have = manifest["image_size"][0]
    if size == have:
        return
    if given:
        raise UserError(f"--image-size {size} differs from the {have}-px records in {folder}; leave it out "
                        f"(the records' size is used) or rebuild the records with --image-size {size}")
    if not quiet:
        print(f"image size: {have} px, the records' (not {size})", flush=True)


def divergence_reason(why: str, epoch: int, precision: str) -> str:
    """The status reason of a diverged run; one in a reduced precision says so,
    as its kernels, not the learning rate, may be the cause."""
    reason = f"{why} at epoch {epoch}"
    if precision != "float32":
        reason += f"; diverged in {precision}; float32 not tried"
    return reason


NEGATIVE_NAME = re.compile(r"(?<![a-z])(normal|negative|healthy|no[ _-]?finding)(?![a-z])", re.IGNORECASE)


def positive_class(setting: str, labels: dict[str, int], folder: Path) -> tuple[str, str]:
    """The positive class's name (matched without regard to case) and why.

    ``auto``: covid when a class is so named; otherwise the one class not named
    like normal, negative, healthy or no finding; otherwise label 0.
    """
    by_lower = {name.lower(): name for name in labels}
    if setting != "auto":
        if setting.lower() not in by_lower:
            raise UserError(f"--positive-class {setting!r} is not a class of {folder} ({', '.join(labels)})")
        return by_lower[setting.lower()], "set"
    if "covid" in by_lower:
        return by_lower["covid"], "auto: the class named covid"
    unlike = [name for name in labels if not NEGATIVE_NAME.search(name)]
    if len(unlike) == 1 and len(labels) == 2:
        return unlike[0], "auto: the class not named like normal/negative/healthy/no finding"
    first = min(labels, key=labels.get)
    return first, "auto: label 0 (no class named covid or like normal); set --positive-class to choose"


def choose_numerics(cfg: TrainConfig, quiet: bool = True, largest_batch: int | None = None) -> Numerics:
    """What ``auto`` precision, XLA and BatchNorm momentum become for ``cfg``.

    A sweep resolves them once for all its trials: precision and XLA at its
    first trial's shape, the momentum for the fewest steps per epoch any
    trial has (``largest_batch``)."""
    cfg, manifest, _ = resolve(cfg, quiet)
    count = manifest["splits"]["train"]["count"]
    # The probe draws numbers, but every set-up seeds again (Trainer.set_up).
    return choose(cfg, manifest["channels"], count // max(largest_batch or cfg.batch_size, cfg.batch_size))


def prepare(cfg: TrainConfig, *, trainer: Trainer | None = None, processes: int = 1, quiet: bool = False,
            force: bool = False, distribution: tf.distribute.Strategy | None = None,
            numerics: Numerics | None = None, size_given: bool = False, on_damage: str = "restart") -> Run:
    """Everything a run needs before its first step (see the module docstring).

    ``trainer`` keeps the compiled classifier and what was traced for it from
    one call to the next in this process (``Trainer``); None: a new one for
    this run alone. ``processes``: how many trial processes share this
    machine (``engine compare --parallel N``), for the time estimates. A run
    folder (``cfg.out``) holding another config is refused here, before any
    model is built; ``force`` clears it, whatever it holds.
    ``distribution`` overrides the strategy the trainer hands out (from the
    devices and ``TF_CONFIG``); ``numerics`` the choice of precision, XLA and
    momentum; ``size_given``: see ``resolve``. A damaged state file
    (``DamagedState``) restarts the run from epoch 0 with its old state
    renamed ``*.damaged``, or with ``on_damage="raise"`` (a sweep's trial)
    is raised.
    """
    trainer = trainer or Trainer()
    cfg, manifest, why = resolve(cfg, quiet, size_given)
    positive = metrics.positive_label_of(manifest["label_map"], cfg.positive_class)
    if why != "set" and not quiet:
        print(f"positive class: {cfg.positive_class} ({why})", flush=True)
    if numerics is not None:
        # Numerics chosen for a whole sweep: its trial's config.json records
        # what ran (re-runnable alone, and compared as such on resume).
        cfg = replace(cfg, precision=numerics.precision.value, xla=numerics.xla.value)
    if cfg.out is not None:
        check_resume(distribute.output_folder(cfg.out), cfg, force, on_damage)
    distribute.op_determinism(cfg.deterministic)
    steps = manifest["splits"]["train"]["count"] // cfg.batch_size
    chosen = numerics or choose(cfg, manifest["channels"], steps)
    distribution = distribution or trainer.strategy()
    if isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        distribute.multi_worker_fixes()
    classifier = trainer.set_up(cfg, manifest, steps, chosen, distribution)
    return Run(cfg, cfg.records, manifest, positive, chosen, steps, distribution, classifier, trainer,
               on_damage=on_damage, processes=processes)


def train(cfg: TrainConfig, *, trainer: Trainer | None = None, processes: int = 1, quiet: bool = False,
          force: bool = False, callbacks=(), distribution: tf.distribute.Strategy | None = None,
          numerics: Numerics | None = None, size_given: bool = False, on_damage: str = "restart") -> dict:
    """``prepare(cfg, ...).fit()``: trains (or resumes) one run; returns its ``metrics.json``."""
    run = prepare(cfg, trainer=trainer, processes=processes, quiet=quiet, force=force, distribution=distribution,
                  numerics=numerics, size_given=size_given, on_damage=on_damage)
    return run.fit(callbacks=callbacks, quiet=quiet)


def class_weights(manifest: dict) -> dict[int, float]:
    """Inverse class frequency of the train split, mean weight 1 (Keras' "balanced")."""
    counts = manifest["splits"]["train"]["per_class"]
    total = sum(counts.values())
    return {manifest["label_map"][name]: total / (len(counts) * n) for name, n in counts.items()}


def check_resume(run: Path, cfg: TrainConfig, force: bool, on_damage: str = "restart") -> None:
    """Refuses to mix two configs in one run folder (``force`` clears it
    instead, also when its state cannot be read). Paths compare by their
    absolute form, so a run resumes however its folder is spelled."""
    path = run / runs.CONFIG
    if force:
        clear_run(run)
        return
    if not path.is_file():
        return
    try:
        stored = read_json(path)
    except DamagedState as err:
        if on_damage == "raise":
            raise
        restart_damaged(run, err, keep=(runs.DATA,))
        return
    # Not ``out``: the folder holding config.json is the run's, however it is
    # spelled or mounted here (another node may see it through another link).
    differing = [name for name in differences(stored, cfg) if name != "out"]
    if differing:
        raise UserError(f"{run} holds a run with another config (differs in: {', '.join(differing)}); "
                        f"use another --out, or --force to start over (discarding {progress_of(run)})")


def progress_of(run: Path) -> str:
    """What a run folder holds, as ``--force`` would discard it."""
    try:
        result = runs.read_metrics(run)
        if result is not None and result.get("status") in runs.FINISHED:
            return f"a {result['status']} run of {len(read_history(run))} epochs"
        state = read_state(run)
        epochs = read_json(run / runs.CONFIG).get("epochs", "?")
    except DamagedState:
        return "its damaged state"
    return f"finished epochs: {0 if state is None else state['epoch'] + 1} of {epochs}"


# What a run folder holds besides its config: cleared by --force, set aside when damaged.
STATE = (CHECKPOINT, runs.LOGS, runs.HISTORY, runs.METRICS, *runs.MODELS, runs.scores_path(Path(), "val").name,
         runs.scores_path(Path(), "test").name, runs.FAILURE)


def clear_run(run: Path) -> None:
    for name in STATE:
        if (run / name).is_dir():
            shutil.rmtree(run / name, ignore_errors=True)
        else:
            (run / name).unlink(missing_ok=True)


def restart_damaged(run: Path, err: DamagedState, keep: tuple[str, ...]) -> None:
    set_aside(run, keep)
    print(f"{err}: starting again from epoch 0 (the old state is kept as *.damaged)", file=sys.stderr, flush=True)


def set_aside(run: Path, keep: tuple[str, ...] = ()) -> list[Path]:
    """Renames a damaged run's state (``NAME.damaged``): nothing of it is read
    again or mixed into the new history, and nothing is lost."""
    return [move_aside(run / name) for name in (*STATE, runs.CONFIG, runs.DATA)
            if name not in keep and (run / name).exists()]
