"""Progress reporting for long steps, independent of any UI.

Long operations accept ``progress: ProgressCallback | None``; they call it with
a fraction in [0, 1] and a short message. The CLI shows a bar on stderr, the
GUI a progress dialog.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ProgressCallback", "report", "subrange"]


class ProgressCallback(Protocol):
    """Called as ``progress(fraction, message)``; fraction in [0, 1]."""

    def __call__(self, fraction: float, message: str) -> None: ...


def report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    """Call ``progress`` if given, clamping the fraction to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def subrange(
    progress: ProgressCallback | None, start: float, stop: float
) -> ProgressCallback | None:
    """A callback mapping [0, 1] onto [start, stop] of ``progress`` (for sub-steps)."""
    if progress is None:
        return None
    parent = progress

    def _sub(fraction: float, message: str) -> None:
        parent(start + (stop - start) * min(1.0, max(0.0, fraction)), message)

    return _sub
