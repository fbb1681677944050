"""A dependency-free progress bar for downloads and epochs (stderr, one line)."""

from __future__ import annotations

import sys
import time


def _human(n: float, unit: str) -> str:
    if unit == "B":
        for u in ("B", "KB", "MB", "GB"):
            if n < 1024 or u == "GB":
                return f"{n:.1f} {u}" if u != "B" else f"{int(n)} B"
            n /= 1024
    return f"{int(n)}"


class ProgressBar:
    """``bar = ProgressBar(total, 'epoch 1/150'); bar.update(64, loss=...); bar.close()``.

    Redraws at most every 0.2 s on a terminal; when stderr is not a terminal
    (logs, CI) it prints nothing until ``close``, which prints one summary line.
    """

    def __init__(self, total: int, desc: str, unit: str = "", disable: bool = False, stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.disable = disable
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.n = 0
        self.start = self._last = time.perf_counter()
        self.postfix = ""

    def update(self, k: int = 1, **postfix) -> None:
        self.n += k
        if postfix:
            self.postfix = "  ".join(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}" for key, v in postfix.items())
        now = time.perf_counter()
        if self.tty and not self.disable and now - self._last > 0.2:
            self._last = now
            self.stream.write("\r" + self._line(now))
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            frac = min(self.n / self.total, 1.0)
            filled = int(frac * 25)
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            bar = f"[{'#' * filled}{'.' * (25 - filled)}] {frac:6.1%} {_human(self.n, self.unit)}/{_human(self.total, self.unit)}"
            timing = f"{elapsed:.0f}s<{eta:.0f}s"
        else:
            bar, timing = _human(self.n, self.unit), f"{elapsed:.0f}s"
        rate_s = f"{_human(rate, self.unit)}/s" if self.unit == "B" else f"{rate:.1f} {self.unit or 'it'}/s"
        return f"{self.desc} {bar} {timing} {rate_s} {self.postfix}".rstrip()

    def close(self) -> None:
        if self.disable:
            return
        line = self._line(time.perf_counter())
        self.stream.write(("\r" + line + "\n") if self.tty else (line + "\n"))
        self.stream.flush()
