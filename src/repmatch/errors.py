"""User-facing errors.

Every problem caused by what the user passed in (a path, a column, a flag, an adapter) is
raised as :class:`RepmatchError` with a one-line message naming the bad value and how to fix
it. The CLI prints that message without a traceback; anything else is a bug and keeps its
traceback.
"""


class RepmatchError(Exception):
    """A problem with the user's input, explained in one line."""
