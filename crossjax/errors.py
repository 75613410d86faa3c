"""User-facing errors.

A `CrossjaxError` is a mistake the user can fix (bad config value, unknown name, missing
file). The CLIs print its message on one line and exit non-zero without a traceback.
"""


class CrossjaxError(Exception):
    """A problem the user can fix; the message names it and says what would fix it."""


class ConfigError(CrossjaxError):
    """A config field is missing, unknown, of the wrong type, or has a bad value."""
