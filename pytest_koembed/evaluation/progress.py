"""Live progress of a task's encoding: texts encoded so far and in all, rate, time left.

Plain code, no pytest: :class:`TaskProgress` counts the texts the encoder has finished (it is the
progress callback ``evaluation.evaluate_task`` calls) and hands a formatted line to a ``show``
function at most every ``interval`` seconds; :class:`StatusLine` puts that line on an ANSI
terminal after whatever is on the current line, and erases it again, without moving the cursor,
so that the test runner's own output continues exactly where it would have.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable

# DEC save cursor, erase to the end of the line, DEC restore cursor.
_SAVE, _ERASE, _RESTORE = "\x1b7", "\x1b[K", "\x1b8"
MIN_ROOM = 24  # columns a status needs to be worth showing


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"


def format_progress(column: str, done: int, total: int, elapsed: float) -> str:
    """``Kor-STS: 1,234/5,504 texts (22%), 245 texts/s, 0:17 left``.

    Before the first batch is done: ``Kor-STS: encoding 5,504 texts``; once all are done:
    ``Kor-STS: 5,504 texts encoded in 0:22 (245 texts/s), scoring``.
    """
    total = max(total, done)  # an estimate that fell short never shows more than 100%
    if done <= 0 or elapsed <= 0:
        return f"{column}: encoding {total:,} texts"
    rate = done / elapsed
    if done >= total:
        return (
            f"{column}: {done:,} texts encoded in {format_duration(elapsed)} "
            f"({format_rate(rate)} texts/s), scoring"
        )
    percent = int(100 * done / total) if total else 100
    left = format_duration((total - done) / rate)
    return (
        f"{column}: {done:,}/{total:,} texts ({percent}%), {format_rate(rate)} texts/s, {left} left"
    )


class TaskProgress:
    """Counts one task's encoded texts; ``progress(n)`` after each batch of n texts.

    ``reading_data()`` says the data is being read; ``begin(total)`` starts the clock once the
    task's data is ready (``total``: the texts the
    task will encode). ``show`` gets the formatted line: on the first batch, then at most every
    ``interval`` seconds, and when the last text is done.
    """

    def __init__(
        self,
        column: str,
        show: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.5,
    ) -> None:
        self.column = column
        self.total = 0
        self.done = 0
        self._show = show
        self._clock = clock
        self._interval = interval
        self._started: float | None = None
        self._last_shown: float | None = None

    def reading_data(self) -> None:
        """Shown while the task's data is read (a Hub download can take a while)."""
        self._show(f"{self.column}: reading data")

    def begin(self, total: int) -> None:
        self.total = max(0, int(total))
        self.done = 0
        self._started = self._clock()
        self._last_shown = self._started
        self._show(self.text(self._started))

    def __call__(self, n: int) -> None:
        if self._started is None:  # called without begin(): count, with an unknown total
            self.begin(0)
        self.done += int(n)
        now = self._clock()
        first = self.done == int(n)
        finished = self.done >= self.total
        assert self._last_shown is not None
        if first or finished or now - self._last_shown >= self._interval:
            self._last_shown = now
            self._show(self.text(now))

    def reused(self, n: int) -> None:
        """``n`` of the texts counted in the total were served from the embedding store: they
        will not be encoded, so the total shrinks to the texts actually encoded."""
        if self._started is None:
            self.begin(0)
        self.total = max(self.done, self.total - int(n))
        if self.done and self.done >= self.total:
            now = self._clock()
            self._last_shown = now
            self._show(self.text(now))

    def text(self, now: float | None = None) -> str:
        if self._started is None:
            return f"{self.column}: reading data"
        elapsed = (self._clock() if now is None else now) - self._started
        return format_progress(self.column, self.done, self.total, elapsed)


def display_width(text: str) -> int:
    """Terminal columns of ``text`` (East Asian wide characters take two)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
        for c in text
    )


def fit(text: str, room: int) -> str:
    """``text`` cut to ``room`` columns (with ``...``), or "" when less than MIN_ROOM is left."""
    if room < MIN_ROOM:
        return ""
    if display_width(text) <= room:
        return text
    out, width = [], 0
    for c in text:
        w = display_width(c)
        if width + w > room - 3:
            break
        out.append(c)
        width += w
    return "".join(out) + "..."


class StatusLine:
    """A status text shown after the cursor and erased again; the cursor never moves.

    ``write`` puts raw text on the terminal; ``room`` says how many columns are left on the
    current line. Only for ANSI terminals: the caller decides whether there is one.
    """

    def __init__(self, write: Callable[[str], None], room: Callable[[], int]) -> None:
        self._write = write
        self._room = room
        self.shown = False

    def show(self, text: str) -> None:
        line = fit(" " + text, self._room() - 1)  # one column spare: never touch the margin
        if line:
            self._write(f"{_SAVE}{_ERASE}{line}{_RESTORE}")
            self.shown = True
        else:
            self.clear()

    def clear(self) -> None:
        if self.shown:
            self._write(_ERASE)
            self.shown = False
