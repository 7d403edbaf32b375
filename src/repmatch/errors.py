"""User-facing errors.

Every problem caused by what the user passed in (a path, a column, a flag, an adapter) is
raised as :class:`RepmatchError` with a one-line message naming the bad value and how to fix
it. The CLI prints that message without a traceback; anything else is a bug and keeps its
traceback.
"""


class RepmatchError(Exception):
    """A problem with the user's input, explained in one line.

    ``field``: the configuration field at fault, when one is (e.g. ``"rank"``), so that the
    command line can name its flag.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def first_line(exc: BaseException, width: int = 200) -> str:
    """The first line of an exception's message, shortened to ``width`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."
