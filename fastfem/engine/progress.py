"""Progress bar for long runs: tqdm (images/s, ETA) on a terminal, nothing when disabled."""

from __future__ import annotations

from typing import Any


class _NoBar:
    def update(self, n: int) -> None:
        del n

    def close(self) -> None:
        pass


def progress_bar(total: int | None, enabled: bool = True, desc: str = "explain") -> Any:
    """A tqdm bar counting images, or a no-op bar when ``enabled`` is False."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=desc, smoothing=0.1)
