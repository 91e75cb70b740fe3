"""SIGTERM/SIGINT during a run: what a cluster's preemption and a user's Ctrl-C should do.

Start-up (loading data, building the model, compiling): nothing is worth saving yet, so the first signal
ends the process at once with one line. Training: the first signal asks the loop to save a checkpoint
after the current step and exit; a second one means "now": it exits without saving (the last finished
checkpoint is what a re-run resumes from). Either way the exit status is 128 + the signal number.
"""

from __future__ import annotations

import signal

from tinyvla_jax.errors import Interrupted


class StopSignal:
  """`with StopSignal() as stop:` ... `stop.training()` ... `if stop.received:` save and leave."""

  def __init__(self):
    self.received: str | None = None
    self.signum: int | None = None
    self._training = False
    self._start_up_signal: Interrupted | None = None
    self._previous = {}

  def __enter__(self) -> StopSignal:
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def training(self) -> None:
    """From here on the first signal is a request to save and stop (start-up is over)."""
    if self._start_up_signal is not None:
      # The handler's exception was lost: Python runs a signal handler wherever the main thread is, and an
      # exception raised inside a garbage-collection callback or a __del__ (JAX registers one for the GC) is
      # printed and swallowed. Seen in CI: start-up went on and the run trained to the end, exit status 0.
      raise self._start_up_signal
    self._training = True

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if not self._training:
      self._start_up_signal = Interrupted(f"stopped by {name} during start-up, before training began (nothing to "
                                          "save)", signum)
      raise self._start_up_signal
    if self.received is not None:
      raise Interrupted(f"second signal ({name}): stopped without saving; re-running resumes from the last "
                        "saved checkpoint", signum)
    self.received, self.signum = name, signum

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
