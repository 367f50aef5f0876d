"""Fault injection at named points, for the tests that prove interrupted commands leave usable directories.

``SEGDEPLOY_FAULT="point:action[,point:action…]"`` makes the process act when it reaches
`fault_point(point)`. Actions: ``kill`` (SIGKILL itself: a crash or power cut, no cleanup runs),
``interrupt`` (raise KeyboardInterrupt: Ctrl-C), ``enospc`` (raise OSError ENOSPC: disk full),
``sleep=SECONDS`` (hold still, e.g. while holding a lock), ``pause=FILE`` (write FILE.reached, hold until FILE exists). Unset — always, outside tests — it
does nothing.

Points: ``export:staged`` (new graph and manifest written under temp names, nothing replaced),
``export:committing`` (the journal records the switch, nothing moved yet), ``export:half-committed``
(model.onnx replaced, manifest.json not yet), ``export:committed`` (both replaced, journal not yet
cleared), ``build:loaded`` (lock held, manifest read), ``build:written`` (a precision graph is on
disk under its final name and recorded in memory, the manifest not yet saved).
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "SEGDEPLOY_FAULT"


def fault_point(name: str) -> None:
    """Act as SEGDEPLOY_FAULT says when this point is reached (normally: nothing)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, _, action = item.strip().rpartition(":")
        if point == name:
            _act(action, name)


def _act(action: str, name: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "interrupt":
        raise KeyboardInterrupt
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif action.startswith("sleep="):
        time.sleep(float(action.partition("=")[2]))
    elif action.startswith("pause="):  # say so in FILE.reached, hold until the test creates FILE (at most 10 minutes)
        go = action.partition("=")[2]
        with open(f"{go}.reached", "w") as handle:
            handle.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + 600
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} at {name}")
