"""Measuring a run: wall time and peak memory (sampled RSS, anonymous RSS, data size, the kernel's ru_maxrss), per stage.

Anonymous memory (heap, private mappings) is what a RAM budget must hold; file-backed pages
(XGBoost maps its cache files) are reclaimable, so both are reported apart. The data size
(``VmData``: heap and private writable mappings, touched or not) is what ``RLIMIT_DATA``
(``prlimit --data``) caps.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import psutil


def anonymous_rss_bytes() -> int:
    """``RssAnon`` of this process from /proc (0 where /proc is not available)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def data_bytes(info: psutil._common.pmem | None = None) -> int:  # type: ignore[name-defined]
    """This process's data size (``VmData`` plus stack; Linux), what ``RLIMIT_DATA`` caps; 0 elsewhere."""
    info = info if info is not None else psutil.Process().memory_info()
    return int(getattr(info, "data", 0))


def max_rss_bytes() -> int:
    """The kernel's high-water mark of this process's RSS (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class Stage:
    """Wall time spent in one stage of a run (summed when it recurs) and the peak memory seen during it."""

    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_anon_bytes: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"seconds": round(self.seconds, 3), "peak_rss_bytes": self.peak_rss_bytes, "peak_anon_bytes": self.peak_anon_bytes}


@dataclass
class MemorySample:
    seconds: float
    rss_bytes: int
    anon_bytes: int
    data_bytes: int


@dataclass
class MemoryMonitor:
    """Samples RSS in a background thread while used as a context manager.

    The kernel's ``ru_maxrss`` catches peaks between samples, but Linux carries a parent's
    high-water mark into a child across fork and exec, so it only counts when it rose while
    the monitor ran; otherwise the sampled peak stands.
    """

    interval: float = 0.05
    keep_samples: bool = False
    peak_rss_bytes: int = 0
    peak_anon_bytes: int = 0
    peak_data_bytes: int = 0
    samples: list[MemorySample] = field(default_factory=list)
    stages: dict[str, Stage] = field(default_factory=dict)
    _current: Stage | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _started: float = 0.0
    _ended: float = 0.0
    _max_rss_at_start: int = 0

    def sample(self) -> None:
        """Take one sample now."""
        info = psutil.Process().memory_info()
        anon = anonymous_rss_bytes()
        data = data_bytes(info)
        self.peak_rss_bytes = max(self.peak_rss_bytes, info.rss)
        self.peak_anon_bytes = max(self.peak_anon_bytes, anon)
        self.peak_data_bytes = max(self.peak_data_bytes, data)
        stage = self._current
        if stage is not None:
            stage.peak_rss_bytes = max(stage.peak_rss_bytes, info.rss)
            stage.peak_anon_bytes = max(stage.peak_anon_bytes, anon)
        if self.keep_samples:
            self.samples.append(MemorySample(time.perf_counter() - self._started, info.rss, anon, data))

    @property
    def seconds(self) -> float:
        """Wall time the monitor ran (so far, while it runs)."""
        return (self._ended or time.perf_counter()) - self._started

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Time the block as stage ``name`` (added to earlier time in it) and track its peak memory."""
        stage = self.stages.setdefault(name, Stage())
        previous, self._current = self._current, stage
        started = time.perf_counter()
        self.sample()
        try:
            yield stage
        finally:
            self.sample()
            stage.seconds += time.perf_counter() - started
            self._current = previous

    def report(self) -> dict[str, object]:
        """The measurements as a report's fields: seconds, peaks, and each stage's time and peak."""
        return {
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_anon_bytes": self.peak_anon_bytes,
            "peak_data_bytes": self.peak_data_bytes,
            "stages": {name: stage.to_dict() for name, stage in self.stages.items()},
        }

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.sample()
        except MemoryError:  # under a data limit the sampler is the first to fail; the run reports its own error
            return

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        self._max_rss_at_start = max_rss_bytes()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="extmem-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._ended = time.perf_counter()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        kernel_peak = max_rss_bytes()
        if kernel_peak > self._max_rss_at_start:
            self.peak_rss_bytes = max(self.peak_rss_bytes, kernel_peak)
