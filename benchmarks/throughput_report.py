"""benchmarks/throughput.py's measuring and reporting: peak RSS, timed loops, the matmul peak,
the Markdown tables and the plot."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time


class PeakRSS:
  """Peak resident set (MB) of this process and its children while the block runs."""

  def __init__(self):
    try:
      import psutil  # pylint: disable=import-outside-toplevel
      self._proc = psutil.Process()
    except ImportError:
      self._proc = None
    self.start = self.peak = 0.0

  def _now(self) -> float:
    if self._proc is None:
      import resource  # pylint: disable=import-outside-toplevel
      return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux: lifetime
    total = self._proc.memory_info().rss
    for c in self._proc.children(recursive=True):
      with contextlib.suppress(Exception):
        total += c.memory_info().rss
    return total / 2**20

  def _watch(self):
    while not self._stop.wait(0.02):
      self.peak = max(self.peak, self._now())

  def __enter__(self):
    self.start = self.peak = self._now()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self._now())

  def __str__(self):
    return f"{self.peak:.0f} (+{self.peak - self.start:.0f})"


def timed_loop(fn, min_s: float, min_reps: int, sync=lambda out: out):
  """Calls fn() until min_s seconds and min_reps calls have passed; -> (calls/s, calls)."""
  reps, t0 = 0, time.perf_counter()
  while True:
    sync(fn())
    reps += 1
    dt = time.perf_counter() - t0
    if reps >= min_reps and dt >= min_s:
      return reps / dt, reps


def _once(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def matmul_peak(jax, torch) -> dict:
  """FLOP/s of the best float32 n x n matmul (n = 1024, 2048) of numpy, JAX and torch."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  out = {}
  for n in (1024, 2048):
    x = np.random.default_rng(0).standard_normal((2, n, n)).astype(np.float32)
    dot = jax.jit(jnp.dot)
    jx = [jax.device_put(v) for v in x]
    tx = [torch.from_numpy(v) for v in x]
    for name, fn in (("numpy", lambda: x[0] @ x[1]),
                     ("jax", lambda: dot(*jx).block_until_ready()),
                     ("torch", lambda: tx[0] @ tx[1])):
      fn()
      best = min(_once(fn) for _ in range(3 if n == 2048 else 5))
      out[f"{name} {n}"] = 2 * n**3 / best
  return out


def report(results: dict, args, mm: dict, peak: float, total_s: float, versions: str):
  """Prints the three figures' Markdown tables (stdout); writes --json and the --plot PNG."""
  a = args
  shadow = "the model's 4096" if a.shadow_size is None else a.shadow_size
  print(f"\n`python benchmarks/throughput.py {' '.join(sys.argv[1:])}` · {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end · {versions} · libero_object, 64x64 images, MuJoCo shadow map {shadow}"
        f" · matmul peak {peak / 1e9:.1f} GFLOP/s ("
        + ", ".join(f"{k}: {v / 1e9:.1f}" for k, v in mm.items()) + f") · {total_s:.0f} s\n")
  heads = {"env": ("env steps/s with pixels (both cameras every step)", "env steps/s"),
           "inference": ("student + teacher inference (one policy step)", "obs/s"),
           "opd": ("full OPD iteration (env steps differ: episodes end at success)",
                   "env steps/s")}
  for fig, rows in results.items():
    if not rows:
      continue
    title, unit = heads[fig]
    flops = fig != "env"
    print(f"### {title}\n")
    per_it = fig == "opd"   # same work per iteration (B worlds x policy steps): compare time
    cols = ["size", "worlds", f"JAX {unit}", "JAX compile s", "PyTorch", f"PyTorch {unit}",
            "torch warm-up s"] + (["JAX s / iteration", "PyTorch s / iteration"] if per_it else [])
    cols += ["JAX / PyTorch" + (" (iterations/s)" if per_it else ""), "peak RSS MB JAX",
             "peak RSS MB PyTorch"]
    if flops:
      cols += ["model GFLOP / " + ("obs" if fig == "inference" else "iteration"),
               "% of peak JAX", "% of peak PyTorch"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
      cells = [r["size"], r["worlds"], f"{r['jax']:.1f}",
               f"{r['jax_compile_s']:.0f}" + (f" ({r['jax_cache']})" if "jax_cache" in r else ""),
               r["torch_variant"], f"{r['torch']:.1f}", f"{r['torch_warmup_s']:.1f}"]
      if per_it:
        cells += [f"{r['jax_s_per_it']:.1f}", f"{r['torch_s_per_it']:.1f}",
                  f"{r['torch_s_per_it'] / r['jax_s_per_it']:.2f}"]
      else:
        cells += [f"{r['jax'] / r['torch']:.2f}"]
      cells += [r["jax_rss"], r["torch_rss"]]
      if flops:
        g = r.get("flops_per_step", r.get("flops_per_iteration", 0)) / 1e9
        cells += [f"{g:.3g}", f"{r['jax_flops_pct']:.1f}", f"{r['torch_flops_pct']:.1f}"]
      print("| " + " | ".join(map(str, cells)) + " |")
    print()
  if a.json:
    with open(a.json, "w") as f:
      json.dump(dict(argv=sys.argv[1:], matmul=mm, results=results), f, indent=1)
  if a.plot:
    plot(results, a.plot)


def plot(results: dict, path: str):

  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  figs = [f for f in ("env", "inference", "opd") if results[f]]
  if not figs:
    return
  fig, axes = plt.subplots(1, len(figs), figsize=(5.5 * len(figs), 4.2), squeeze=False)
  titles = {"env": "env steps/s (pixels)", "inference": "student+teacher obs/s",
            "opd": "OPD iteration env steps/s"}
  for ax, f in zip(axes[0], figs):
    lines = {}
    for r in results[f]:
      lines.setdefault((r["size"], "JAX"), {})[r["worlds"]] = r["jax"]
      lines.setdefault((r["size"], "PyTorch " + r["torch_variant"]), {})[r["worlds"]] = r["torch"]
    for (size, name), pts in lines.items():
      xs = sorted(pts)
      ax.plot(xs, [pts[x] for x in xs], "o-" if name == "JAX" else "s--",
              label=name if size == "-" else f"{name} ({size})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("worlds")
    ax.set_title(titles[f])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"JAX vs PyTorch, {os.cpu_count()} CPUs (load average "
               f"{os.getloadavg()[0]:.1f})", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  print(f"plot: {path}", file=sys.stderr, flush=True)
