"""Orbax's failures as crossjax reports them: one line each, without the noise.

Orbax and tensorstore report a failed write or read as long ValueError/RuntimeError text
(whole JSON specs, an `os_error_code`), and the operations still in flight when one
fails leave stray exceptions behind. `crossjax.checkpoint` uses these helpers to turn
them into one-line `CrossjaxError`s and to silence the harmless leftovers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from crossjax.errors import CrossjaxError


def short_reason(error: Exception, limit: int = 300) -> str:
    """One line naming the error; tensorstore messages embed whole JSON specs."""
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}"


def shorten(reason: str, limit: int) -> str:
    """`reason` cut to `limit` characters."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def ignore_closed_loop_errors() -> None:
    """Silence the stray `RuntimeError: Event loop is closed` of a failed restore or save.

    When one read or write fails, Orbax closes its asyncio loop while tensorstore
    operations are still in flight; their completion callbacks then hit the closed loop
    and land in `sys.unraisablehook`, as do the writes still pending when Python exits
    after a failed save. They are harmless noise; everything else passes on.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_crossjax_filter", False):
        return

    def hook(unraisable: Any) -> None:
        text = str(unraisable.exc_value)
        if unraisable.exc_type is RuntimeError and "Event loop is closed" in text:
            return
        if unraisable.exc_type is ImportError and "Python is likely shutting down" in text:
            return
        previous(unraisable)

    hook._crossjax_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


@contextlib.contextmanager
def storage_errors(directory: str) -> Iterator[None]:
    """Turns a failed write (disk full, read-only, permissions) into one CrossjaxError.

    Orbax reports tensorstore's failures as ValueError/RuntimeError text carrying
    `os_error_code='N'`; plain OSErrors come from its JSON and directory writes.
    """
    try:
        yield
    except CrossjaxError:
        raise
    except Exception as e:  # noqa: BLE001 - only storage failures are translated
        code = e.errno if isinstance(e, OSError) else None
        if code is None and (match := _OS_ERROR_CODE.search(str(e))):
            code = int(match.group(1))
        if code is None:
            raise
        raise CrossjaxError(
            f"cannot write checkpoints in {directory}: {os.strerror(code)}; free space or fix "
            "permissions, then rerun to continue from the last complete checkpoint"
        ) from None
