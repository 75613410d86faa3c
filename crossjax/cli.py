"""Shared plumbing of the thin scripts in scripts/: logging set-up and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from crossjax.errors import CrossjaxError

EXIT_USER_ERROR = 2


def run(main: Callable[[list[str]], None]) -> None:
    """absl.app.run(main) with crossjax logging at INFO and CrossjaxError as one line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app
    from absl import logging as absl_logging

    def wrapped(argv: list[str]) -> None:
        absl_logging.set_verbosity(absl_logging.WARNING)  # quiet TFDS/Orbax/Grain chatter
        logging.getLogger("crossjax").setLevel(logging.INFO)
        try:
            main(argv)
        except CrossjaxError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    try:
        app.run(wrapped)
    except CrossjaxError as e:  # raised while loading the config file (flag parsing)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
