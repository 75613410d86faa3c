"""Shared plumbing of the thin scripts in scripts/: flag parsing, logging, one-line errors.

Every problem the user can fix (bad flag, missing config file, unknown field or name,
unwritable workdir) ends the script with `error: <one line>` on stderr and exit code 2,
without a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from crossjax.errors import ConfigError, CrossjaxError

EXIT_USER_ERROR = 2


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run(main: Callable[[list[str]], None]) -> None:
    """Parses flags, then runs `main` under absl with crossjax logging at INFO."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app, flags
    from absl import logging as absl_logging

    try:
        remaining = flags.FLAGS(sys.argv)
    except flags.Error as e:
        fail(f"bad flag: {_last_line(e)}")
    except CrossjaxError as e:  # a config file's get_config rejected its variant
        fail(str(e))
    except (KeyError, AttributeError) as e:  # ml_collections: override of an unknown field
        fail(f"unknown config field {_last_line(e)} in the --config.* flags; check its spelling")
    except (TypeError, ValueError) as e:  # ml_collections: override of the wrong type
        fail(f"bad --config.* value: {_last_line(e)}")

    def wrapped(argv: list[str]) -> None:
        absl_logging.set_verbosity(absl_logging.WARNING)  # quiet TFDS/Orbax/Grain chatter
        logging.getLogger("crossjax").setLevel(logging.INFO)
        try:
            main(argv)
        except CrossjaxError as e:
            fail(str(e))

    app.run(wrapped, flags_parser=lambda _: remaining)


def config_value(holder) -> object:
    """The config of a `config_flags.DEFINE_config_file` flag, or a ConfigError in one line."""
    from absl import flags
    from ml_collections import config_flags

    path = config_flags.get_config_filename(flags.FLAGS[holder.name]).partition(":")[0]
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = holder.value
        config.to_dict()  # a config that failed to load raises here, not at parse time
        return config
    except Exception as e:  # noqa: BLE001 - whatever the user's config file raised
        raise ConfigError(f"cannot load config {path}: {_last_line(e)}") from None
