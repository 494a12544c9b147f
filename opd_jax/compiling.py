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
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import jax

from opd_jax import traced

# `envs` turns XLA:CPU's fusion emitters off for the whole process (MJX's kinematics is ~500x
# slower with them). A program without physics compiles ~6x faster with them on and runs as
# fast (the default job's gradient step: 60 s -> 10 s, 0.91 s per step either way).
NO_PHYSICS = {"xla_cpu_use_fusion_emitters": True}

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


def compile_programs(named: Sequence[tuple], *,
                     log: Callable[[str], None] | None = None,
                     context: str | None = None,
                     compiler_options: dict | None = None) -> list[Any]:
  """Lowers each ``(name, jitted, args[, options])`` in order and compiles them concurrently
  (XLA compiles one program on one core; two programs use two). ``options``: XLA options of
  that program alone, over ``compiler_options`` (e.g. :data:`NO_PHYSICS`). ``args`` may be a function of
  the programs lowered before it (``args(lowered_so_far)``), to take its argument shapes from
  their outputs without tracing them twice. Returns the compiled executables, in order.

  ``compiler_options``: XLA options for every program (not given to ``jax.jit``: a jit nested
  in a kept program may carry none). With the persistent cache on
  and a ``context`` (:func:`opd_jax.traced.fingerprint` of
  everything the programs close over), the traced programs are kept beside it too
  (:mod:`opd_jax.traced`), so a later run neither traces nor compiles them.

  Prints one line before (what is compiled) and one after (how long, and whether the
  programs came from the persistent cache)."""
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  named = [tuple(n) + ({},) * (4 - len(n)) for n in named]
  names = ", ".join(n[0] for n in named)
  cache = jax.config.jax_compilation_cache_dir
  t0 = time.time()
  log(f"compiling {names} ..." + (f" (first run only: later runs load them from {cache})"
                                   if cache else " (compilation cache off)"))
  lowered = []
  for name, fn, args, _ in named:
    args = args(lowered) if callable(args) else args
    lowered.append(traced.lower(os.path.join(cache, "traced"), name, fn, args, context)
                   if cache and context is not None else fn.lower(*args))
  t_lower = time.time() - t0
  loaded = sum(isinstance(lo, traced.Lowered) and lo.from_disk for lo in lowered)
  options = [{**(compiler_options or {}), **n[3]} or None for n in named]
  with count_cache_events() as ev:
    if len(lowered) == 1:
      out = [lowered[0].compile(options[0])]
    else:
      with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
        out = list(pool.map(lambda lo, o: lo.compile(o), lowered, options))
  dt = time.time() - t0
  how = (f"loaded from the compilation cache" if ev.hits and not ev.misses
         else f"{ev.hits} of {ev.hits + ev.misses} loaded from the cache" if ev.hits
         else "compiled")
  trace = (f"traced programs loaded in {t_lower:.0f} s" if loaded == len(lowered)
           else f"tracing {t_lower:.0f} s")
  log(f"{names}: {how} in {dt:.0f} s ({trace})")
  return out
