"""Progress of a long step, the same way in every stage: a tqdm bar when a person watches a
terminal, otherwise one INFO line every ``BLAST_PROGRESS_INTERVAL_S`` seconds (default 30), e.g.

    profiles user: 1,200/4,400 rows (27%), 41 s

so a batch job's log shows that a long stage is alive without bar redraws. Used by the profiles
and features generation (rows through Ray Data), the kNN searches (Ray tasks), the Sinkhorn
iterations and the evaluate stage's baselines.

Example (a fake clock: a line at most once per interval, and one at the end)::

    >>> import logging
    >>> t = iter([0.0, 10.0, 31.0, 40.0, 50.0, 75.0]).__next__
    >>> lines = []
    >>> class L:
    ...     def info(self, fmt, *a): lines.append(fmt % a)
    >>> with Progress("features", total=4, unit="rows", logger=L(), terminal=False, clock=t, interval_s=30) as p:
    ...     for _ in range(4): p.update(1)
    >>> lines
    ['features: 2/4 rows (50%), 31 s', 'features: 4/4 rows (100%), 75 s']
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Iterable

log = logging.getLogger("blast_ray.progress")

INTERVAL_ENV = "BLAST_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0


def interval_from_env() -> float:
    """Seconds between two progress lines off a terminal: ``$BLAST_PROGRESS_INTERVAL_S`` (> 0), else 30.
    A value that is not a positive number is a one-line error naming the variable."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: give a positive number of seconds (e.g. 30), or unset it")
    return value


def on_terminal(stream=None) -> bool:
    """True when ``stream`` (default stderr) is a terminal: the tqdm bar, else periodic lines."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts done units of one step of ``total`` (None: unknown) and shows them.

    terminal: None = :func:`on_terminal`; True -> a tqdm bar on stderr (no log lines), False ->
    an INFO line on ``logger`` when ``interval_s`` (default :func:`interval_from_env`) has passed
    since the last one, and a final line at :meth:`close` when the step ran longer than one
    interval (a short step stays silent). ``clock``: seconds (tests pass a fake one).
    """

    def __init__(self, what: str, total: int | None, unit: str = "rows", *, logger: Any = None,
                 terminal: bool | None = None, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self._log = logger if logger is not None else log
        self._clock = clock
        self._start = self._last = clock()
        self._interval = interval_s if interval_s is not None else interval_from_env()
        self._lines = 0
        self._closed = False
        self._shown = -1  # the count of the last line shown (no repeat of it at close)
        self._bar = None
        if terminal if terminal is not None else on_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def line(self, now: float | None = None) -> str:
        """``what: done/total unit (pct%), elapsed s`` (no total: ``what: done unit, elapsed s``)."""
        elapsed = (now if now is not None else self._clock()) - self._start
        if self.total:
            return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} "
                    f"({100 * self.done / self.total:.0f}%), {elapsed:.0f} s")
        return f"{self.what}: {self.done:,} {self.unit}, {elapsed:.0f} s"

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._lines += 1
            self._shown = self.done
            self._log.info("%s", self.line(now))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        now = self._clock()
        if self._closed:
            return
        self._closed = True
        if (self._lines or now - self._start >= self._interval) and self._shown != self.done:
            self._log.info("%s", self.line(now))
            self._lines += 1

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def collect_pandas(ds, progress: Progress):
    """``ds.to_pandas()`` with ``progress`` advanced by each batch's rows as Ray Data produces
    them: the same batches, builder and conversion as Ray 2.60's ``Dataset.to_pandas`` (so the
    same frame, dtypes included; callers sort)."""
    from ray.data._internal.pandas_block import PandasBlockBuilder
    from ray.data.block import BlockAccessor

    builder = PandasBlockBuilder()
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        builder.add_block(batch)
        progress.update(len(batch))
    progress.close()
    return BlockAccessor.for_block(builder.build()).to_pandas()


def wait_all(ray, futures: list, sizes: Iterable[int], progress: Progress, fetch_local: bool = False) -> None:
    """Wait until every future is done, ``progress`` advanced by ``sizes[i]`` when task i finishes,
    whatever the order they finish in. ``fetch_local`` False: the results stay in the object store
    (not copied to this node)."""
    key = lambda f: f.hex() if hasattr(f, "hex") else id(f)  # noqa: E731
    size_of = dict(zip((key(f) for f in futures), sizes))
    pending = list(futures)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, fetch_local=fetch_local)
        for f in ready:
            progress.update(size_of.get(key(f), 1))
    progress.close()


def get_in_order(ray, futures: list, sizes: Iterable[int], progress: Progress) -> list:
    """``ray.get(futures)`` (results in the futures' order) with ``progress`` advanced as
    :func:`wait_all` does."""
    wait_all(ray, futures, sizes, progress, fetch_local=True)
    return ray.get(futures)
