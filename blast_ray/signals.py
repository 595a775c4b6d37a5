"""SIGTERM and SIGINT as exceptions, and what a library's error handling must not hide from them.

An entry point (``blast_ray.entry.main_wrapper``) installs :func:`install_handlers`: SIGTERM then
raises :class:`Terminated` in the main thread (SIGINT is Python's own ``KeyboardInterrupt``) and
the run is recorded ``failed`` with the signal named and the process ends with 128 + signal.

A signal sent to the whole process group (``timeout``, ``kill -- -PGID``, Kubernetes) also stops
Spark's JVM and Ray's workers at the same instant, and library code between us and the signal does
not always let the exception through:

* py4j's ``except KeyboardInterrupt`` clean-up opens a new connection to the dead JVM, so a
  ``ConnectionRefusedError`` replaces the interrupt (which stays in its ``__context__``);
* pyspark's ``CapturedException.__str__`` runs a JVM call under ``except BaseException: pass``,
  so an interrupt raised inside it is swallowed whole.

So the handler also remembers that the signal came (:func:`received`), and
:func:`interrupt_behind` names the interrupt behind any exception: the one in its chain, or the
signal received since the handlers were installed. The pipeline driver and ``main_wrapper`` ask
it before calling a failure a stage's error.
"""

from __future__ import annotations

import signal
import threading

_received: list[int] = []  # signal numbers caught by the handlers since install_handlers


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``kill``, Kubernetes) as an exception, so the run is recorded as failed
    with the signal named and the process ends with 128 + signal, without a traceback."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):  # noqa: ARG001 - the signal module's handler signature
    signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM while we record must not cut it short
    _received.append(signum)
    raise Terminated(signum)


def install_handlers():
    """SIGTERM raises :class:`Terminated` and is remembered for :func:`received` (SIGINT keeps
    Python's ``KeyboardInterrupt``; pyspark replaces that handler with its own anyway). Only from
    the main thread (signal's rule; elsewhere a no-op returning None). Returns the previous SIGTERM
    handler so an in-process caller (tests) can give it back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _received.clear()
    return signal.signal(signal.SIGTERM, _raise_terminated)


def uninstall_handlers(previous) -> None:
    """Give back the SIGTERM handler :func:`install_handlers` returned (None: nothing to do) and
    forget the signals received, so that a later run in the same process (tests, Ray Tune trials)
    does not take an old signal for its own."""
    if previous is None:
        return
    signal.signal(signal.SIGTERM, previous)
    _received.clear()


def received() -> int | None:
    """The first signal the handlers caught since they were installed, or None."""
    return _received[0] if _received else None


def interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The interrupt that ``exc`` stands for, or None when it is an error of its own.

    ``exc`` itself or an exception in its ``__cause__``/``__context__`` chain when it is a
    ``KeyboardInterrupt`` (Terminated included); else, when a handled signal arrived since
    :func:`install_handlers`, a fresh :class:`Terminated` for it (a library swallowed the one
    raised)."""
    found = interrupt_in_chain(exc)
    if found is not None:
        return found
    sig = received()
    return None if sig is None else Terminated(sig)


def interrupt_in_chain(exc: BaseException | None) -> KeyboardInterrupt | None:
    """``exc`` or the first exception of its ``__cause__``/``__context__`` chain that is a
    ``KeyboardInterrupt`` (Terminated included), or None (at most 20 links are followed)."""
    seen = 0
    e = exc
    while e is not None and seen < 20:
        if isinstance(e, KeyboardInterrupt):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


__all__ = ["Terminated", "install_handlers", "uninstall_handlers", "received", "interrupt_behind", "interrupt_in_chain"]
