"""The ``repmatch`` command line: parses arguments into configs and calls the public API.

One module per command, each with ``register(commands)`` adding its parser and a ``run(args)``.
Nothing here computes anything. Errors the user caused (:class:`RepmatchError`) are printed as one
line on stderr with exit status 2; Ctrl-C exits with 130, SIGTERM with 143.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import warnings
from collections.abc import Sequence

from repmatch.cli.common import shown
from repmatch.errors import RepmatchError

#: Command modules of this package, in the order ``repmatch --help`` lists them.
COMMANDS = (
    "train",
    "compare",
    "datasets",
    "score",
    "select",
    "evaluate",
    "baseline",
    "overlap",
    "report",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repmatch",
        description="How similar are two pieces of training data from a model's point of view? "
        "Train LoRA adapters on them and compare the updates (RepMatch).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"repmatch.cli.{name}").register(commands)
    return parser


def _flag(field: str | None) -> str | None:
    """The command-line flag of a configuration or data spec field (None: not a flag)."""
    if field is None or field == "source":
        return None
    return "--seed / --sample-seed" if field == "seed" else "--" + field.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_ShownFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    previous = signal.signal(signal.SIGTERM, _terminate)  # clean up as for Ctrl-C
    try:
        args.run(args)
    except RepmatchError as err:
        flag = _flag(err.field)
        message = shown(err) + (f" [{flag}]" if flag else "")
        print(f"repmatch: error: {message}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as stop:
        terminated = isinstance(stop, _Terminated)
        print("repmatch: " + ("terminated" if terminated else "interrupted"), file=sys.stderr)
        hint = args.resume_hint(args) if hasattr(args, "resume_hint") else None
        if hint is not None:
            print(f"repmatch: {shown(hint)}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


class _ShownFormatter(logging.Formatter):
    """Log lines with control characters escaped: messages quote ids, labels and names from
    the data (see :func:`repmatch.cli.common.shown`)."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


class _Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated
