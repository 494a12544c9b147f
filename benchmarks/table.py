"""Greedy success of several policies in one Markdown table, with 95% binomial intervals.

  python benchmarks/table.py teacher=runs/eval50/teacher student=runs/eval50/student \\
      [--plot docs/main_table.png] [--title "libero_object, 50 states per task"]

Each ``NAME=DIR`` names a directory holding the ``results.json`` of ``python -m
opd_jax.evaluate`` (or of a training run's evaluation). The interval is Wilson's score
interval on all the policy's episodes pooled over tasks.
"""
from __future__ import annotations

import argparse
import json
import math
import os


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a success rate k/n."""
  if n <= 0:
    return 0.0, 1.0
  p = k / n
  d = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / d
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
  return max(0.0, centre - half), min(1.0, centre + half)


def load(path: str) -> dict:
  f = path if path.endswith(".json") else os.path.join(path, "results.json")
  with open(f) as fh:
    return json.load(fh)


def table(rows: list[tuple[str, dict]], title: str = "") -> str:
  """Markdown: a row per policy, a column per task, the average with its interval."""
  tasks = rows[0][1].get("task_ids", list(range(len(rows[0][1]["per_task"]))))
  head = ["policy"] + [f"t{t}" for t in tasks] + ["average (95% CI)", "episodes"]
  lines = ([f"**{title}**", ""] if title else []) + [
      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, r in rows:
    n = r["episodes_per_task"] * len(r["per_task"])
    lo, hi = wilson(r["success"] * n, n)
    cells = [name] + [f"{100 * s:.0f}" for s in r["per_task"]]
    cells += [f"**{100 * r['success']:.1f}%** ({100 * lo:.1f}-{100 * hi:.1f})", str(n)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: list[tuple[str, dict]], out: str, title: str = "") -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = [n for n, _ in rows]
  means, errs = [], [[], []]
  for _, r in rows:
    n = r["episodes_per_task"] * len(r["per_task"])
    lo, hi = wilson(r["success"] * n, n)
    means.append(100 * r["success"])
    errs[0].append(100 * (r["success"] - lo))
    errs[1].append(100 * (hi - r["success"]))
  fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.2))
  ax.bar(names, means, yerr=errs, capsize=4, color="tab:blue")
  ax.set_ylabel("greedy success (%)")
  ax.set_ylim(0, 100)
  ax.set_title(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  fig.savefig(out, dpi=120)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("rows", nargs="+", help="NAME=DIR (a directory with results.json)")
  ap.add_argument("--plot", default="", help="also write a bar chart (PNG) here")
  ap.add_argument("--title", default="")
  args = ap.parse_args(argv)
  rows = []
  for spec in args.rows:
    name, sep, path = spec.partition("=")
    if not sep:
      raise SystemExit(f"table: {spec!r}: give NAME=DIR, e.g. teacher=runs/eval50/teacher")
    rows.append((name, load(path)))
  print(table(rows, args.title))
  if args.plot:
    plot(rows, args.plot, args.title)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
  main()
