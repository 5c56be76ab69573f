"""One error convention for everything a user can cause.

A :class:`UserError` carries *what is wrong* and *how to fix it*. Stage scripts run their ``main`` through
:func:`run_main`, which turns a ``UserError`` into a single line on stderr::

    synthgap: error: <what is wrong>; <how to fix>

and exits with status 2, without a traceback. ``--debug`` on the command line or ``SYNTHGAP_DEBUG=1`` in the
environment re-raises instead, so the full traceback is shown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A failure caused by the user's input (params, data files, environment), with a fix to suggest."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}; {fix}")
        self.what = what
        self.fix = fix

    def line(self) -> str:
        return f"synthgap: error: {self.what}; {self.fix}"


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("SYNTHGAP_DEBUG", "") not in ("", "0")


def run_main(main: Callable[[], object]) -> None:
    """Run a stage's ``main`` under the error convention and exit with its status."""
    try:
        main()
    except UserError as err:
        if debug_enabled():
            raise
        print(err.line(), file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("synthgap: error: interrupted; rerun the stage to resume", file=sys.stderr, flush=True)
        sys.exit(130)
