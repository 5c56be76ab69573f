"""One error convention for everything a user can cause.

A :class:`UserError` carries *what is wrong* and *how to fix it*. Stage scripts run their ``main`` through
:func:`run_main`, which turns a ``UserError`` into a single line on stderr::

    synthgap: error: <what is wrong>; <how to fix>

and exits with status 2, without a traceback (an interrupt, SIGINT or SIGTERM, too). ``--debug`` on the command line or ``SYNTHGAP_DEBUG=1`` in the
environment re-raises instead, so the full traceback is shown.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

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


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: stop like Ctrl-C, so the MLflow run is marked KILLED and nothing is replaced."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _kept_state(stage: str) -> list[str]:
    """Resumable state files of this stage that exist now."""
    from synthgap.paths import repo_root
    from synthgap.train.state import saved_states

    return [str(p) for p in saved_states(repo_root(), stage)]


def run_main(main: Callable[[], object]) -> None:
    """Run a stage's ``main`` under the error convention and exit with its status.

    Its outputs are staged and land together only if it succeeds (``synthgap.staging``). SIGTERM is
    handled as SIGINT; both end with one line saying whether training state was kept to resume from.
    SIGXFSZ is ignored, so a file over ``ulimit -f`` is a failed write (one line), not a silent kill. Stages
    under a DVC queue share the cores (:func:`synthgap.runtime.share_cores`)."""
    from synthgap.paths import repo_root, workspace_root
    from synthgap.runtime import share_cores
    from synthgap.staging import transaction

    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    stage = (Path(sys.argv[0]).stem + (f"@{args[0]}" if args else "")) if sys.argv and sys.argv[0] else ""
    try:
        share_cores(workspace_root(), repo_root())
        with transaction(workspace_root()):
            main()
    except UserError as err:
        if debug_enabled():
            raise
        print(err.line(), file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt as err:
        name = err.signal_name if isinstance(err, Interrupted) else "SIGINT"
        kept = _kept_state(stage)
        what = f"interrupted by {name}; no output was replaced"
        fix = (f"rerun the stage to resume from {', '.join(kept)}" if kept
               else "no training state was saved yet, so a rerun starts the stage over")
        print(UserError(what, fix).line(), file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    _end_stage_process(main)


def _end_stage_process(main: Callable[[], object]) -> None:
    """A stage started as ``python -m stages.<stage>`` that succeeded ends here, with status 0, without the
    interpreter's teardown: unloading torch, MLflow, SQLAlchemy and diffusers takes 1-2 s and writes nothing
    (38 stages: about a minute of every ``dvc repro``). Every output is written, closed and moved into place
    and the MLflow run is FINISHED by now. A ``main`` run inside another program (a test calling the stage in
    its own process) returns as usual."""
    if getattr(sys.modules.get("__main__"), "main", None) is not main:
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
