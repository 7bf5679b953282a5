"""Progress bars on stderr (tqdm, imported only when a bar is shown)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Self

from extmem._signals import raise_if_stopped


class ProgressBar:
    """A tqdm bar on stderr when ``enabled`` (None: when stderr is a terminal); otherwise every call is a no-op."""

    def __init__(self, total: int | None, description: str, unit: str, enabled: bool | None) -> None:
        self._bar: Any = None
        if enabled or (enabled is None and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False)

    def update(self, count: int) -> None:
        raise_if_stopped()
        if self._bar is not None:
            self._bar.update(count)

    def add_total(self, count: int) -> None:
        """Expect ``count`` more (rows of one more dataset, say): the total grows by it."""
        if self._bar is not None:
            self._bar.total = (self._bar.total or 0) + count
            self._bar.refresh()

    def set_postfix(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
