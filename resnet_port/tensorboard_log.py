"""TensorBoard event files, written (and read back) without TensorFlow or PyTorch.

Both training CLIs log through this one writer, into the run directory itself, so
``tensorboard --logdir runs/`` shows every run as its own line and overlays Keras
and PyTorch runs of the same recipe.  The files are TensorBoard's own format: a
TFRecord stream of ``Event`` protocol buffers (``tensorboard.compat.proto``),
framed by ``tensorboard``'s pure-Python record writer.  TensorBoard's
``EventFileWriter`` is not used: it goes through ``tf.io.gfile``, which imports
TensorFlow when it is installed, and this package imports no framework.

A run that is resumed appends a new event file.  :func:`read_scalars` tells the
lifecycle what is already logged, so that each epoch is written exactly once
and step-level values are not written twice.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

PREFIX = "events.out.tfevents."


class EventWriter:
    """Appends scalar summaries to a new event file in ``logdir``."""

    def __init__(self, logdir: str | os.PathLike):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2 = event_pb2
        self.path = Path(logdir) / f"{PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}.resnet-port"
        self._file = open(self.path, "ab")
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()]
        )
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._file.close()


def event_files(logdir: str | os.PathLike) -> list[Path]:
    return sorted(Path(logdir).glob(f"{PREFIX}*"))


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every event file in ``logdir``, in file order.

    A record cut short (a process killed while writing) ends that file's reading.
    """
    from tensorboard.compat.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(logdir):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            end = pos + 12 + n + 4
            if end > len(data):
                break
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
            pos = end
    return out
