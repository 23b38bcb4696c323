"""The one exception type that means "the user asked for something that cannot be done".

The CLI prints a GanzooError as a single line and exits with status 2; anything else is a bug and keeps
its traceback. Library callers catch GanzooError to tell bad input from broken code.
"""


class GanzooError(Exception):
    """A user-facing error: the message is complete and fits on one line."""


class DivergedError(GanzooError):
    """Training produced a NaN or infinite loss; the run folder keeps the log up to that step."""


def debugging() -> bool:
    """GANZOO_DEBUG asks for tracebacks; unset, empty, 0, false, no and off mean it does not."""
    import os

    return os.environ.get("GANZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
