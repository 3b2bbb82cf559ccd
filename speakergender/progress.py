"""Progress on stderr for long file operations: a throttled byte meter and one-line notes."""

from __future__ import annotations

import sys
import time


class ByteProgress:
    """Throttled byte counter on stderr: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, total: int | None, done: int, enabled: bool):
        """Start counting and show the first line.

        Args:
          total: bytes expected in all, or None when unknown.
          done: bytes already there before this run (they do not count toward the rate).
          enabled: write anything at all.
        """
        self._stream = sys.stderr
        self._enabled = enabled
        self._tty = enabled and self._stream.isatty()
        self._interval = 0.2 if self._tty else 5.0
        self._total = total
        self._first = done
        self._done = done
        self._start = time.monotonic()
        self._last = float("-inf")
        self._width = 0
        self.update(done)

    def update(self, done: int, force: bool = False) -> None:
        """Record `done` bytes so far; redraw if the last line is old enough or `force` is set."""
        self._done = done
        now = time.monotonic()
        if not self._enabled or (not force and now - self._last < self._interval):
            return
        self._last = now
        line = self._line(now)
        if self._tty:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Show the final count and end the line."""
        self.update(self._done, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        rate = (self._done - self._first) / elapsed if elapsed > 0 else 0.0
        text = f"  {format_bytes(self._done)}"
        if self._total:
            text += f" / {format_bytes(self._total)} ({100 * self._done // self._total}%)"
        if rate > 0:
            text += f"  {format_bytes(rate)}/s"
            if self._total and self._total > self._done:
                text += f"  {_format_duration((self._total - self._done) / rate)} left"
        return text


def format_bytes(count: float) -> str:
    """A byte count in decimal units.

    Args:
      count: bytes (or bytes per second).

    Returns:
      "512 B", "1.5 kB", "12.0 MB" or "3.2 GB".
    """
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def note(message: str, enabled: bool) -> None:
    """Print `message` on stderr when `enabled`."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
