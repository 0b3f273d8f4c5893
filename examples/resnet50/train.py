#!/usr/bin/env python3
"""resnet50: the seed's TensorFlow ResNet-50 training job, on the NPU its pod was given.

The workload of the ``kubenpu.local/resnet50`` image (pushed to the dev cluster's registry as
``npu-registry.example.com/demo/npu-resnet50``). In order, it

1. reports the NPU the container was given and checks it with npu-check's own code
   (``examples/npu-check/npu_check.py``, copied next to this file in the image): the
   ``*NPU_VISIBLE_DEVICES`` variables the device plugin set, the device nodes under /dev, and
   ``$KUBENPU_DEVICES``, the placement the scheduler extender recorded on the pod
   (``kubenpu.io/devices``, passed in through the downward API). No device, or other devices
   than the record names: it says so (``error ...``) and exits 1 without training;
2. trains TensorFlow's own ResNet-50 (``keras.applications.ResNet50(weights=None)``: built
   from scratch, no weights downloaded) on scikit-learn's bundled digits (1,797 8x8
   grey-scale images shipped inside the scikit-learn wheel), upsampled to 32x32x3, ResNet's
   smallest input, for a fixed number of epochs, one line per epoch (loss, accuracy, images/s);
3. evaluates it on a held-out split (20 %, stratified, never trained on) and ends with
   ``top-1: NN.N%  top-5: NN.N%  on <device>``, then exits 0.

It runs on the accelerator when TensorFlow can drive one (a GPU TensorFlow sees), else it says
it is running on CPU: the dev cluster's NPUs are mock device nodes no framework can compute
on, so there the NPU part is the device check and the math runs on the CPU.

A short schedule leaves Keras' BatchNormalization moving statistics (momentum 0.99) far from
the weights they must describe, and evaluation with them is near chance. So before the
evaluation the statistics are recomputed over the training images with the weights fixed
("precise BN": one pass, no labels, no held-out image involved).

With ``--summary PATH`` (default: ``/dev/termination-log`` when it exists, i.e. in a
Kubernetes container) it also writes the outcome as one JSON object, which Kubernetes shows
as the container's termination message (``kubectl npu validate`` reads it).

Exit status: 0 trained and evaluated; 1 the NPU check or the training failed; 2 bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import npu_check
except ImportError:  # run from a source checkout: examples/npu-check is a sibling
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "npu-check"))
    import npu_check

#: Where Kubernetes looks for the termination message (the container's default
#: terminationMessagePath).
TERMINATION_LOG = "/dev/termination-log"
#: The termination message Kubernetes keeps is at most this long.
SUMMARY_LIMIT = 4096
#: ResNet-50's smallest input side (five stride-2 stages).
IMAGE_SIDE = 32
#: Classes of the digits data set.
CLASSES = 10


# ---- pure helpers (no TensorFlow) ----------------------------------------------------------


def cpu_budget(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota
    (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``) rounded up. A container on a 104-core node
    with a 2-CPU limit gets 2, not 104."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root))
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    return None


def top_k_accuracy(scores: Any, labels: Any, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (ties: the lower
    class index first, as a stable sort orders them)."""
    import numpy as np

    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or len(scores) != len(labels) or not len(labels):
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} do not match")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == labels[:, None], axis=1)))


def percent(fraction: float) -> str:
    """0.9753 -> ``97.5%``."""
    return f"{100 * fraction:.1f}%"


def result_line(top1: float, top5: float, device: str) -> str:
    """The last line of a successful run."""
    return f"top-1: {percent(top1)}  top-5: {percent(top5)}  on {device}"


def epoch_line(
    epoch: int, epochs: int, loss: float, accuracy: float, rate: float, secs: float
) -> str:
    """One line per epoch."""
    return (
        f"epoch {epoch}/{epochs}  loss {loss:.4f}  accuracy {percent(accuracy)}  "
        f"images/s {rate:.1f}  ({secs:.1f}s)"
    )


def summary_text(summary: Mapping[str, Any]) -> str:
    """The summary as compact JSON that fits a termination message (long strings cut)."""
    data = dict(summary)
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    if len(text) > SUMMARY_LIMIT and isinstance(data.get("error"), str):
        data["error"] = data["error"][: max(0, len(data["error"]) - (len(text) - SUMMARY_LIMIT))]
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return text[:SUMMARY_LIMIT]


def write_summary(path: str | None, summary: Mapping[str, Any]) -> None:
    """Write the summary to ``path`` (nothing when None); never fails the run."""
    if not path:
        return
    with contextlib.suppress(OSError):
        Path(path).write_text(summary_text(summary))


# ---- the run -------------------------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Keep TensorFlow's start-up chatter (oneDNN and CPU-feature notices, which C++ writes
    before any log level applies) out of the log, and show it only if the import fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _load_digits(test_fraction: float, seed: int) -> tuple[Any, Any, Any, Any, str]:
    import numpy as np
    import sklearn
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # ships inside the scikit-learn wheel: no download
    images = (digits.images / 16.0).astype("float32")[..., None]
    images = tf.image.resize(images, (IMAGE_SIDE, IMAGE_SIDE), method="bilinear").numpy()
    images = np.repeat(images, 3, axis=-1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    return x_train, x_test, y_train, y_test, sklearn.__version__


def _device(tf: Any) -> tuple[str, str]:
    """(short name, explanation) of where the math runs."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = details.get("device_name", gpus[0].name)
        return f"GPU:0 ({name})", f"TensorFlow drives {len(gpus)} GPU(s): running on GPU:0"
    return "CPU", (
        "TensorFlow finds no GPU or other accelerator it can drive here (the NPU above is "
        "checked, not computed on): running on CPU"
    )


def _recalibrate_batchnorm(model: Any, images: Any, chunk: int) -> None:
    """Set every BatchNormalization layer's moving mean and variance to the statistics of
    ``images`` under the trained weights (the mean over chunks of the batch statistics)."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), chunk)):
            # momentum k/(k+1): after chunk k the moving value is the mean of chunks 0..k.
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(images[start : start + chunk], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum


def train(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """Steps 2 and 3; fills ``summary`` as it goes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.monotonic()
    with _quiet_stderr():
        import keras
        import tensorflow as tf

    threads = args.threads or cpu_budget()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    # ResNet-50 is one chain of ops: running two at once only splits the same cores.
    tf.config.threading.set_inter_op_parallelism_threads(1 if threads <= 4 else 2)
    device, why = _device(tf)
    summary["device"] = device
    _say(f"tensorflow {tf.__version__} (keras {keras.__version__}), {threads} CPU thread(s); {why}")

    x_train, x_test, y_train, y_test, sklearn_version = _load_digits(args.test_fraction, args.seed)
    _say(
        f"data: scikit-learn {sklearn_version}'s digits, {len(x_train)} training and "
        f"{len(x_test)} held-out images, 8x8 upsampled to {IMAGE_SIDE}x{IMAGE_SIDE}x3"
    )
    keras.utils.set_random_seed(args.seed)
    model = keras.applications.ResNet50(
        weights=None, input_shape=(IMAGE_SIDE, IMAGE_SIDE, 3), classes=CLASSES
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Whole batches only, reshuffled every epoch (a different remainder left out each time):
    # a smaller last batch would make TensorFlow build a second graph in the first epoch.
    steps = max(1, len(x_train) // args.batch_size)
    per_step = min(args.batch_size, len(x_train))
    batches = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
        .batch(per_step, drop_remainder=True)
        .prefetch(1)
    )
    _say(
        f"model: keras.applications.ResNet50(weights=None), {model.count_params():,} "
        f"parameters, from scratch; {args.epochs} epoch(s) of {steps} steps, batch "
        f"{per_step}, Adam {args.learning_rate:g}"
    )

    rates: list[float] = []

    class EpochLines(keras.callbacks.Callback):  # type: ignore[misc]
        """One line per epoch. images/s leaves out each epoch's first step, which in the
        first epoch also builds the graph."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.begin = time.monotonic()
            self.first = 0.0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 0:
                self.first = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            now = time.monotonic()
            counted = (steps - 1) * per_step
            span = now - (self.first or self.begin)
            rate = counted / span if counted and span > 0 else steps * per_step / (now - self.begin)
            rates.append(rate)
            logs = logs or {}
            _say(
                epoch_line(
                    epoch + 1,
                    args.epochs,
                    float(logs.get("loss", float("nan"))),
                    float(logs.get("accuracy", float("nan"))),
                    rate,
                    now - self.begin,
                )
            )

    train_started = time.monotonic()
    # shuffle=False: the data set reshuffles itself every epoch (above).
    model.fit(batches, epochs=args.epochs, shuffle=False, verbose=0, callbacks=[EpochLines()])
    train_seconds = time.monotonic() - train_started
    summary["epochs"] = args.epochs
    # Throughput once the graph is built: the epochs after the first, when there are some.
    steady = rates[1:] or rates
    summary["images_per_s"] = round(sum(steady) / len(steady), 1) if steady else None
    summary["train_seconds"] = round(train_seconds, 1)

    recal_started = time.monotonic()
    _recalibrate_batchnorm(model, x_train, chunk=256)
    _say(
        f"batch-norm statistics recomputed over the {len(x_train)} training images "
        f"({time.monotonic() - recal_started:.1f}s)"
    )
    scores = model.predict(x_test, batch_size=256, verbose=0)
    top1 = top_k_accuracy(scores, y_test, 1)
    top5 = top_k_accuracy(scores, y_test, 5)
    summary.update(
        top1=round(100 * top1, 1),
        top5=round(100 * top5, 1),
        held_out=len(y_test),
        seconds=round(time.monotonic() - started, 1),
    )
    _say(
        f"evaluated on the {len(y_test)} held-out images; training {train_seconds:.1f}s, "
        f"whole run {time.monotonic() - started:.1f}s"
    )
    _say(result_line(top1, top5, device))


def check_npus(args: argparse.Namespace, summary: dict[str, Any]) -> str | None:
    """Step 1: print npu-check's report; return the reason to stop, or None."""
    devices = npu_check.find_devices(args.dev)
    lines, reason = npu_check.check(os.environ, devices, args.dev)
    for line in lines:
        _say(line)
    summary["devices"] = [d.path for d in devices]
    summary["visible"] = {n: v for n, v in sorted(os.environ.items()) if npu_check.ENV_MARKER in n}
    if npu_check.RECORD_ENV in os.environ:
        summary["record"] = os.environ[npu_check.RECORD_ENV]
    summary["match"] = reason is None
    if reason is None:
        _say(npu_check.verdict(devices))
    return reason


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (default 1e-3)")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out share (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split and initial weights")
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow CPU threads (default: the CPU budget)"
    )
    parser.add_argument("--dev", default="/dev", help="where to look for NPU device nodes")
    parser.add_argument(
        "--no-npu-check",
        action="store_true",
        help="train without an NPU (on a laptop); the device report is still printed",
    )
    parser.add_argument(
        "--summary",
        default=TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None,
        help="write the outcome as JSON here (default: /dev/termination-log when it exists)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or not 0 < args.test_fraction < 1:
        parser.error("--epochs and --batch-size must be at least 1, --test-fraction in (0, 1)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Check the NPUs, train, evaluate; 0 on success, 1 otherwise."""
    args = parse_args(argv)
    _say("resnet50: TensorFlow ResNet-50 from scratch on scikit-learn's digits")
    summary: dict[str, Any] = {"ok": False, "stage": "npu-check"}
    reason = check_npus(args, summary)
    if reason is not None and not args.no_npu_check:
        _say(f"error {reason}")
        summary["error"] = reason
        write_summary(args.summary, summary)
        return 1
    if reason is not None:
        _say(f"warning {reason} (--no-npu-check: training anyway)")
    summary["stage"] = "training"
    try:
        train(args, summary)
    except Exception as exc:
        traceback.print_exc()
        _say(f"error training failed: {type(exc).__name__}: {exc}")
        summary["error"] = f"training failed: {type(exc).__name__}: {exc}"
        write_summary(args.summary, summary)
        return 1
    summary["ok"] = True
    summary["stage"] = "done"
    write_summary(args.summary, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
