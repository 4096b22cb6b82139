"""Child processes that do not outlive their parent, even a parent killed with SIGKILL."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """For `subprocess.Popen(preexec_fn=...)`: the kernel sends the child SIGTERM when the parent dies.

    Without it, `kill -9` of `ltx2 run` left its Prefect API server (uvicorn) running. Linux only; elsewhere
    a no-op.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
