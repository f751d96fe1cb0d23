"""Ctrl-C during long compiled work: noted when it arrives, acted on where it is safe.

    >>> with deferred_interrupt() as pressed:
    ...     for chunk in chunks:
    ...         run(chunk)                       # TF work, traced or compiled: never interrupted mid-way
    ...         if pressed():
    ...             raise Interrupted("... at layer 'conv1'")

Python turns SIGINT into a KeyboardInterrupt at the next bytecode the main thread runs, which may
be inside TensorFlow's own Python code while it traces or compiles a function; there it can be
swallowed, and the work then runs to its end. Inside `deferred_interrupt` the first Ctrl-C only
sets a flag that the caller checks between chunks; a second one raises KeyboardInterrupt at once
(the way out if a chunk never ends). Outside the main thread (where Python delivers no signals) it
does nothing and `pressed()` stays False.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """A context in which SIGINT is recorded rather than raised; yields `pressed()`."""
    state = {"pressed": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if state["pressed"]:
            raise KeyboardInterrupt
        state["pressed"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: state["pressed"]
    finally:
        signal.signal(signal.SIGINT, previous)
