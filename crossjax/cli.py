"""Shared plumbing of the thin scripts in scripts/: flag parsing, logging, one-line errors.

Exit codes: 0 done; 2 a problem the user can fix (bad flag, missing or broken config
file, unknown field or name, unwritable workdir, disk full), reported as one
`error: <line>` on stderr without a traceback; 75 (`EX_TEMPFAIL`) preempted by
SIGTERM/SIGINT with the checkpoint saved, rerun the same command to continue; 1 anything
unexpected (a bug: the traceback is printed). `-h`/`--help` list the script's own flags
and `--helpfull` every flag, both with exit code 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from crossjax.errors import ConfigError, CrossjaxError

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, try again"
_HELP = ("-h", "--help", "-help", "-?", "--helpshort")
_HELPFULL = ("--helpfull", "-helpfull")


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def os_error_message(error: OSError) -> str:
    """One line for a file-system error the user can fix (disk full, read-only, missing)."""
    where = f" {error.filename}" if error.filename else ""
    return (
        f"cannot use{where}: {error.strerror or _last_line(error)}; check the path, its "
        "permissions and the free space"
    )


def _print_help(argv: list[str]) -> None:
    """`-h`/`--help`: the main script's docstring and flags; `--helpfull`: every flag."""
    from absl import app

    full = any(arg in _HELPFULL for arg in argv[1:])
    app.usage(shorthelp=not full, writeto_stdout=True)
    if not full:
        print("\nTry --helpfull to list every flag.")


def run(main: Callable[[list[str]], None]) -> None:
    """Parses flags, then runs `main` under absl with crossjax logging at INFO."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app, flags
    from absl import logging as absl_logging

    if any(arg in _HELP or arg in _HELPFULL for arg in sys.argv[1:]):
        _print_help(sys.argv)
        sys.exit(0)
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
    except OSError as e:
        fail(os_error_message(e))
    except Exception as e:  # noqa: BLE001 - a config file that does not compile, or its get_config raised
        path = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
        fail(f"cannot load config {path}: {type(e).__name__}: {_last_line(e)}; fix the file")

    def wrapped(argv: list[str]) -> int:
        absl_logging.set_verbosity(absl_logging.WARNING)  # quiet TFDS/Orbax/Grain chatter
        logging.getLogger("crossjax").setLevel(logging.INFO)
        return call(main, argv)

    app.run(wrapped, flags_parser=lambda _: remaining)


def _orbax_errors_in_one_line(record: logging.LogRecord) -> bool:
    """Orbax logs a failed background write once per thread, each with a traceback (some
    hundred lines for a full disk); the error reaches the user as one `error:` line, so
    its log records keep only their first line."""
    if record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
        record.msg, record.args = _one_line(record.getMessage())[:300], None
        record.exc_info = record.exc_text = None
    return True


def call(fn: Callable[..., int | None], *args: object, **kwargs: object) -> int:
    """The exit code of `fn(*args, **kwargs)`: its own (None: 0), or EXIT_USER_ERROR after printing
    one `error:` line for a CrossjaxError or an OSError (a full disk, a read-only run or
    data folder). Anything else propagates: a bug, shown with its traceback (exit 1)."""
    logging.getLogger("absl").addFilter(_orbax_errors_in_one_line)  # once: filters are a set
    try:
        return fn(*args, **kwargs) or 0
    except CrossjaxError as e:
        message = str(e)
    except OSError as e:
        message = os_error_message(e)
    print(f"error: {_one_line(message)}", file=sys.stderr)
    return EXIT_USER_ERROR


def _one_line(message: str) -> str:
    return " ".join(message.split())  # one line, whatever the message held


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
