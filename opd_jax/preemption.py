"""Stopping a run cleanly: SIGTERM (a preempted VM, a scheduler, ``kill``) or SIGINT (Ctrl-C)
asks the training loop to stop at the next iteration boundary; the loop saves a checkpoint and
returns, so the process exits 0 and the next start resumes where it stopped. A second signal
stops the process at once, as without this guard."""
from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """``with StopRequest() as stop: ... if stop.requested: save and leave``. Installs its
  handlers only in the main thread (signals are delivered there); elsewhere it never fires."""

  def __init__(self):
    self.requested: str | None = None
    self._old = {}

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.requested:   # the second one: what the signal did before this guard
      self._restore()
      signal.raise_signal(signum)
      return
    self.requested = name
    print(f"{name}: stopping after this iteration with a checkpoint (send it again to stop "
          f"at once, unsaved)", file=sys.stderr, flush=True)

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _restore(self):
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old = {}

  def __exit__(self, *exc):
    self._restore()
