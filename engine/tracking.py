"""Training curves and run settings for experiment trackers (TRAIN.REPORT_TO; docs/tracking.md).

TrainerX calls one `Tracker` per run: `scalars()` once per epoch (the averaged step summaries as
`train/<key>`, the learning rate as `train/lr`, a method's own `val/acc`), `final()` once with the
evaluation's accuracy and the run's settings. Each target of TRAIN.REPORT_TO is one backend:

- tensorboard (default): event files in the run folder itself, written here (`EventFile`: TFRecord
  framing of hand-encoded Event protos, a few lines) rather than through torch.utils.tensorboard,
  whose import alone costs a short run more than the 2% curves may (it loads protobuf modules and,
  where installed, boto3); the `tensorboard` package is needed only to view or read them;
- wandb: an offline W&B run under <run folder>/wandb (WANDB_MODE overrides "offline");
- mlflow: a run in the MLflow store of MLFLOW_TRACKING_URI, else a file store <run folder>/mlruns.

Nothing is imported or written until the first value arrives, so a run that stops before it starts
leaves no event file. A backend that fails to write (a full disk) is dropped with one log note:
curves never stop a run. Light at import (no torch): engine.config checks the key through it.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import itertools
import os
import socket
import struct
import time

TARGETS = ("tensorboard", "wandb", "mlflow")
NONE = "none"
# The module each target imports, and what to install when it is missing (tensorboard needs none).
MODULES = {"wandb": "wandb", "mlflow": "mlflow"}
INSTALL = {"wandb": "pip install wandb", "mlflow": "pip install mlflow"}
EVENT_GLOB = "events.out.tfevents.*"
FLUSH_SECONDS = 5.0  # a crashed run keeps its curves up to this long before the crash


class TrackingError(ValueError):
    """A bad TRAIN.REPORT_TO value or a tracker that is not installed (engine.config makes it a UserError)."""


def report_targets(value) -> list[str]:
    """TRAIN.REPORT_TO as a list of targets: "tensorboard", "tensorboard,wandb", "none" (-> [])."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    unknown = [n for n in names if n not in TARGETS + (NONE,)]
    if unknown or not names:
        raise TrackingError(f"TRAIN.REPORT_TO must name one or more of {', '.join(TARGETS)} (comma-separated), "
                            f"or none; got {value!r}.")
    if NONE in names and len(names) > 1:
        raise TrackingError(f"TRAIN.REPORT_TO none cannot be combined with other trackers; got {value!r}.")
    return [] if names == [NONE] else list(dict.fromkeys(names))


def check_installed(targets: list[str]) -> None:
    """Stop before a run starts when a requested tracker's package is missing (no import: find_spec)."""
    for target in targets:
        if target in MODULES and importlib.util.find_spec(MODULES[target]) is None:
            raise TrackingError(f"TRAIN.REPORT_TO asks for {target}, which is not installed: {INSTALL[target]} "
                                f"(or leave {target} out of TRAIN.REPORT_TO).")


def hparam_value(value):
    """A value every tracker accepts as a setting: numbers, strings and booleans as they are, the rest as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@functools.lru_cache(maxsize=1)
def _default_config() -> dict:
    """The flat default config, built once per process (its methods are registered at import)."""
    from engine.config import flat_config, get_cfg_default

    return flat_config(get_cfg_default())


def settings_params(identity: dict, config: dict) -> dict:
    """What a tracker records as the run's settings: its identity (method, model, dataset, K, seed), the
    settings digest of engine.runs (equal for the seeds of one table cell), and every recorded key whose
    value differs from the default (the full config is in results.json); paths left out."""
    from engine.runs import settings_digest

    defaults = _default_config()
    missing = object()
    changed = {k: v for k, v in sorted(config.items())
               if k != "DATASET.ROOT" and not k.endswith("_DIR") and defaults.get(k, missing) != v}
    return {**identity, "settings_digest": settings_digest(config), **changed}


# ----- TensorBoard event files -------------------------------------------------------------------------
# Field numbers from tensorboard's event.proto, summary.proto and plugins/hparams (api, plugin_data).


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as protobuf stores it
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _pb_bytes(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def _pb_str(number: int, text: str) -> bytes:
    return _pb_bytes(number, text.encode("utf-8"))


def _pb_double(number: int, value: float) -> bytes:
    return _field(number, 1) + struct.pack("<d", value)


def _pb_int(number: int, value: int) -> bytes:
    return _field(number, 0) + _varint(int(value))


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # CRC-32C (Castagnoli), reflected
        table.append(crc)
    return table


_CRC = _crc_table()
_FILES = itertools.count()


def masked_crc32c(data: bytes) -> int:
    """The checksum TFRecord frames carry: CRC-32C, rotated and offset."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _hparam_value(value) -> tuple[bytes, int]:
    """(google.protobuf.Value, HParamInfo data type) of one setting."""
    value = hparam_value(value)
    if isinstance(value, bool):
        return _pb_int(4, int(value)), 2
    if isinstance(value, (int, float)):
        return _pb_double(2, float(value)), 3
    return _pb_str(3, value), 1


class EventFile:
    """One TensorBoard event file: TFRecord frames (length, its CRC, an Event, its CRC)."""

    def __init__(self, folder: str):
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_FILES)}"
        self.path = os.path.join(folder, name)
        self.file = open(self.path, "ab")  # noqa: SIM115  (held for the run, closed by close())
        self.event(_pb_str(3, "brain.Event:2"))

    def event(self, body: bytes, step: int | None = None) -> None:
        data = _pb_double(1, time.time()) + (_pb_int(2, step) if step is not None else b"") + body
        header = struct.pack("<Q", len(data))
        self.file.write(header + struct.pack("<I", masked_crc32c(header)) + data
                        + struct.pack("<I", masked_crc32c(data)))

    def scalars(self, values: dict, step: int) -> None:
        summary = b"".join(_pb_bytes(1, _pb_str(1, tag) + _field(2, 5) + struct.pack("<f", value))
                           for tag, value in values.items())
        self.event(_pb_bytes(5, summary), step)

    def plugin(self, tag: str, plugin: str, content: bytes) -> None:
        metadata = _pb_bytes(1, _pb_str(1, plugin) + _pb_bytes(2, content))
        self.event(_pb_bytes(5, _pb_bytes(1, _pb_str(1, tag) + _pb_bytes(9, metadata))), 0)

    def hparams(self, params: dict, metrics: list[str]) -> None:
        """The HParams dashboard's three records: the experiment (names, metric tags), the session's
        values, and its end (status success)."""
        infos, values = b"", b""
        for key, value in params.items():
            encoded, kind = _hparam_value(value)
            infos += _pb_bytes(4, _pb_str(1, key) + _pb_int(4, kind))
            values += _pb_bytes(1, _pb_str(1, key) + _pb_bytes(2, encoded))
        infos += b"".join(_pb_bytes(5, _pb_bytes(1, _pb_str(2, tag))) for tag in metrics)
        version = _pb_int(1, 0)
        self.plugin("_hparams_/experiment", "hparams", version + _pb_bytes(2, infos))
        self.plugin("_hparams_/session_start_info", "hparams",
                    version + _pb_bytes(3, values + _pb_double(5, time.time())))
        self.plugin("_hparams_/session_end_info", "hparams",
                    version + _pb_bytes(4, _pb_int(1, 1) + _pb_double(2, time.time())))

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardBackend:
    def __init__(self, run_dir: str, fresh: bool):
        if fresh:  # a run starting afresh replaces the curves of an earlier attempt in this folder
            for path in glob.glob(os.path.join(glob.escape(run_dir), EVENT_GLOB)):
                os.remove(path)
        self.writer = EventFile(run_dir)
        self.flushed = time.monotonic()

    def scalars(self, values: dict, step: int) -> None:
        self.writer.scalars(values, step)
        if time.monotonic() - self.flushed > FLUSH_SECONDS:  # not every epoch: fits of 300 tiny epochs exist
            self.writer.flush()
            self.flushed = time.monotonic()

    def hparams(self, params: dict, metrics: dict) -> None:
        self.writer.hparams(params, list(metrics))

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    def __init__(self, run_dir: str, fresh: bool, name: str):
        import wandb

        self.run = wandb.init(dir=run_dir, mode=os.environ.get("WANDB_MODE", "offline"), name=name,
                              project=os.environ.get("WANDB_PROJECT", "biomedcoop"))

    def scalars(self, values: dict, step: int) -> None:
        self.run.log(dict(values), step=step)

    def hparams(self, params: dict, metrics: dict) -> None:
        self.run.config.update({k: hparam_value(v) for k, v in params.items()}, allow_val_change=True)
        self.run.summary.update(metrics)

    def close(self) -> None:
        self.run.finish()


class MlflowBackend:
    def __init__(self, run_dir: str, fresh: bool, name: str):
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # local by default: never a server
            mlflow.set_tracking_uri("file:" + os.path.join(os.path.abspath(run_dir), "mlruns"))
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "biomedcoop"))
        self.run = mlflow.start_run(run_name=name)

    def scalars(self, values: dict, step: int) -> None:
        self.mlflow.log_metrics(dict(values), step=step)

    def hparams(self, params: dict, metrics: dict) -> None:
        self.mlflow.log_params({k: hparam_value(v) for k, v in params.items()})
        self.mlflow.log_metrics(dict(metrics))

    def close(self) -> None:
        self.mlflow.end_run()


class Tracker:
    """The run's trackers, opened at the first value. `log` is the run's logger (notes go there)."""

    def __init__(self, run_dir: str, targets: list[str], name: str, fresh: bool = True, log=None):
        self.run_dir, self.targets, self.name, self.fresh, self.log = run_dir, list(targets), name, fresh, log
        self.backends: dict[str, object] | None = None if run_dir and targets else {}

    def _open(self) -> dict:
        if self.backends is None:
            self.backends = {}
            os.makedirs(self.run_dir, exist_ok=True)
            for target in self.targets:
                self._guard(target, lambda t=target: self.backends.__setitem__(t, self._backend(t)))
        return self.backends

    def _backend(self, target: str):
        if target == "tensorboard":
            return TensorBoardBackend(self.run_dir, self.fresh)
        if target == "wandb":
            return WandbBackend(self.run_dir, self.fresh, self.name)
        return MlflowBackend(self.run_dir, self.fresh, self.name)

    def _guard(self, target: str, action) -> None:
        """Run one backend's action; an OSError drops that backend with a note instead of stopping the run."""
        try:
            action()
        except OSError as err:
            self.backends.pop(target, None)
            if self.log is not None:
                self.log(f"note: {target} tracking stopped ({err}); training goes on")

    def scalars(self, values: dict, step: int) -> None:
        values = {k: float(v) for k, v in values.items()}
        for target, backend in list(self._open().items()):
            self._guard(target, lambda b=backend: b.scalars(values, step))

    def final(self, metrics: dict, step: int, params: dict) -> None:
        """The evaluation's metrics at `step`, the run's settings, then close."""
        metrics = {k: float(v) for k, v in metrics.items()}
        for target, backend in list(self._open().items()):
            self._guard(target, lambda b=backend: b.scalars(metrics, step))
            self._guard(target, lambda b=backend: b.hparams(params, metrics))
        self.close()

    def close(self) -> None:
        for target, backend in list((self.backends or {}).items()):
            self._guard(target, backend.close)
        self.backends = {}


def event_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the TensorBoard event files in a run folder (tests, reports)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
