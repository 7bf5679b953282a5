"""The skeleton every trainer fills in: the output checked before any work, one measurement, private folders, one report, one publication.

A trainer opens its data and fits inside ``with TrainingRun(...) as run:``, timing its stages
with ``run.stage(name)``; leaving the block frees what it registered (matrices, cache folders)
on success, error and interruption alike; :meth:`TrainingRun.finish` then writes the report and
publishes the model folder in one step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from extmem._defaults import CHECKPOINT_FILE
from extmem._destinations import destination
from extmem._folders import PrivateFolder
from extmem._measure import MemoryMonitor, Stage
from extmem._sink import check_model_folder, publish_model
from extmem.run._report import build_report, now


@dataclass(frozen=True)
class TrainResult:
    """The trained model and the report written to ``report.json``; unpacks as ``model, report = extmem.train(...)``.

    ``model`` is an ``xgboost.Booster`` (``train``, ``train_distributed``) or an
    :class:`extmem.IncrementalModel` (``train_incremental``).
    """

    model: Any
    report: dict[str, Any]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.report))

    @property
    def booster(self) -> Any:
        """The trained booster (the same as ``model`` for XGBoost runs)."""
        if type(self.model).__name__ != "Booster":
            msg = f"This run trained a {type(self.model).__name__}, not an XGBoost booster; use 'model'."
            raise AttributeError(msg)
        return self.model


class TrainingRun:
    """One training run of ``trainer`` (``xgboost``, ``incremental`` or ``distributed``) with ``algorithm``.

    ``out`` (the model folder) is checked before any work: it must not exist or be empty, unless
    ``overwrite`` and it holds an extmem model (``check_out=False`` when the trainer checked it).
    """

    def __init__(
        self,
        trainer: str,
        algorithm: str,
        *,
        out: str | os.PathLike[str] | None,
        overwrite: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        check_out: bool = True,
    ) -> None:
        if out is not None and check_out:
            check_model_folder(out, overwrite=overwrite)
        self.trainer = trainer
        self.algorithm = algorithm
        self.out = destination(out) if out is not None else None
        self.overwrite = overwrite
        self.cache_dir = cache_dir
        self.monitor = MemoryMonitor()
        self.started_at = ""
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        self.started_at = now()
        self.monitor.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._stack.close()
        finally:
            self.monitor.__exit__(exc_type, exc, tb)

    def stage(self, name: str) -> AbstractContextManager[Stage]:
        """Time the block as the stage ``name`` of the report (its wall time and peak memory)."""
        return self.monitor.stage(name)

    def cache_folder(self) -> PrivateFolder:
        """A private folder under ``cache_dir`` that lives until the run ends."""
        folder = PrivateFolder(self.cache_dir)
        self._stack.callback(folder.cleanup)
        return folder

    def on_exit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the run ends (before its cache folders go), on error too."""
        self._stack.callback(callback)

    def finish(
        self, model: Any, model_file: str, model_bytes: Callable[[], bytes], common: Mapping[str, Any], details: Mapping[str, Any]
    ) -> TrainResult:
        """The report of the finished run, with the model folder published in ``out`` if given (``model_bytes`` is called then)."""
        report = build_report(
            trainer=self.trainer, algorithm=self.algorithm, started_at=self.started_at, monitor=self.monitor, common=common, details=details
        )
        if self.out is not None:
            ours = isinstance(self.out, Path) and (self.out / CHECKPOINT_FILE).is_file()  # refused at the start unless 'overwrite'
            report = publish_model(self.out, model_file, model_bytes(), report, replace=self.overwrite or ours)
        return TrainResult(model, report)
