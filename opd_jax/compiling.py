"""Compiling ahead of time, with a word to the user, and JAX's persistent compilation cache.

A tool lowers its programs, then compiles them before its loop starts, so that a
progress bar's rate and ETA count only running time and the user is told what the
wait is. With the persistent cache (:func:`enable_cache`, on by default in every CLI)
a second run loads the compiled programs from disk instead of compiling them: the
lowering (tracing) is paid each time, the compile once per program and machine.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import jax

_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


def enable_cache(directory: str, min_compile_secs: float = 0.0) -> None:
  """Stores every program that took at least ``min_compile_secs`` to compile under
  ``directory``, keyed by the program, the JAX/XLA version, the devices and the flags."""
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass
class CacheEvents:
  """Counts of persistent-cache hits and misses (misses = programs compiled afresh while
  the cache was on)."""
  hits: int = 0
  misses: int = 0

  def __call__(self, event: str, **_) -> None:
    if event == _HIT:
      self.hits += 1
    elif event == _MISS:
      self.misses += 1


@contextlib.contextmanager
def count_cache_events() -> Iterator[CacheEvents]:
  events = CacheEvents()
  jax.monitoring.register_event_listener(events)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_listener(events)


def compile_programs(named: Sequence[tuple[str, Callable, Any]], *,
                     log: Callable[[str], None] | None = None) -> list[Any]:
  """Lowers each ``(name, jitted, args)`` in order and compiles them concurrently (XLA
  compiles one program on one core; two programs use two). ``args`` may be a function of
  the programs lowered before it (``args(lowered_so_far)``), to take its argument shapes from
  their outputs without tracing them twice. Returns the compiled executables, in order.

  Prints one line before (what is compiled) and one after (how long, and whether the
  programs came from the persistent cache)."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  names = ", ".join(n for n, _, _ in named)
  cache = jax.config.jax_compilation_cache_dir
  t0 = time.time()
  log(f"compiling {names} ..." + (f" (first run only: later runs load them from {cache})"
                                   if cache else " (compilation cache off)"))
  lowered = []
  for _, fn, args in named:
    lowered.append(fn.lower(*(args(lowered) if callable(args) else args)))
  t_lower = time.time() - t0
  with count_cache_events() as ev:
    if len(lowered) == 1:
      out = [lowered[0].compile()]
    else:
      with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
        out = list(pool.map(lambda lo: lo.compile(), lowered))
  dt = time.time() - t0
  how = (f"loaded from the compilation cache" if ev.hits and not ev.misses
         else f"{ev.hits} of {ev.hits + ev.misses} loaded from the cache" if ev.hits
         else "compiled")
  log(f"{names}: {how} in {dt:.0f} s (tracing {t_lower:.0f} s)")
  return out
