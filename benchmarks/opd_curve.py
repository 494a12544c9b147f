"""Success vs environment steps of OPD runs: a PNG plot and a Markdown table.

  python benchmarks/opd_curve.py runs/opd_rkl runs/opd_fkl --labels reverse_kl,forward_kl \\
      --out benchmarks/opd_spatial.png

Reads each run's ``metrics.jsonl`` (written by opd_jax.train): greedy evaluation
success (``eval/success``, fixed initial states) and the training rollouts'
success (``rollout/success``, sampled at the rollout temperature), both
against environment control steps.
"""
from __future__ import annotations

import argparse
import json
import os


def read_rows(run: str) -> list[dict]:
  """The run's metrics rows, one per step in step order. A resumed run writes the iterations
  after its checkpoint again: the last record of a step wins."""
  merged = {}
  for line in open(os.path.join(run, "metrics.jsonl")):
    if line.strip():
      r = json.loads(line)
      merged.setdefault(r["step"], {}).update(r)
  return [merged[k] for k in sorted(merged)]


def cumulative(rows: list[dict], field: str) -> dict[int, float]:
  """Step -> the sum of ``field`` over the rows up to that step (rows without it skipped)."""
  out, total = {}, 0.0
  for r in rows:
    if field in r:
      total += r[field]
      out[r["step"]] = total
  return out


def load(run: str):
  rows = read_rows(run)
  cum = cumulative(rows, "rollout/control_steps")
  train = [(cum[r["step"]], r["rollout/success"], r.get("train/entropy"), r.get("train/reverse_kl"))
           for r in rows if "rollout/success" in r]
  evals = [(cum.get(r["step"], 0.0), r["step"], r["eval/success"]) for r in rows
           if "eval/success" in r]
  return train, evals, cum


def seconds(run: str) -> dict[int, float]:
  """Iteration -> training seconds up to its end (the sum of ``time/iteration_s``: rollout and
  update, without compiles and evaluations; taken under whatever load the run shared)."""
  return cumulative(read_rows(run), "time/iteration_s")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("runs", nargs="+")
  ap.add_argument("--labels", default="")
  ap.add_argument("--out", default="benchmarks/opd_curve.png")
  ap.add_argument("--mark", action="append", default=[],
                  help="ITERATION:text, a vertical line on every panel (e.g. where a run was "
                  "resumed or its teacher changed), at the first run's env steps; repeatable")
  ap.add_argument("--points", action="append", default=[],
                  help="LABEL=ITER:PERCENT,ITER:PERCENT,... more success figures for the first "
                  "run's greedy-eval panel (e.g. larger evaluations made afterwards); repeatable")
  ap.add_argument("--smooth", type=int, default=10, help="moving average of rollout success")
  ap.add_argument("--wall", action="store_true",
                  help="a fourth panel: greedy eval success against training hours")
  args = ap.parse_args()
  labels = args.labels.split(",") if args.labels else [os.path.basename(r.rstrip("/")) for r in args.runs]
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 4 if args.wall else 3, figsize=(20 if args.wall else 15, 4))
  table = ["| run | iteration | env steps | greedy eval success |", "|---|---|---|---|"]
  for run, label in zip(args.runs, labels):
    train, evals, cum = load(run)
    for mark in (args.mark if run == args.runs[0] else []):
      it, sep, text = mark.partition(":")
      if not sep or not it.strip().isdigit():
        raise SystemExit(f"--mark {mark!r}: expected ITERATION:text")
      if int(it) not in cum:
        raise SystemExit(f"--mark {mark!r}: {run} logged no iteration {it} "
                         f"(it has {min(cum)}..{max(cum)})")
      for a in axes:
        a.axvline(cum[int(it)], color="grey", ls="--", lw=1)
      axes[0].annotate(text, (cum[int(it)], 0), rotation=90, va="bottom", ha="right", fontsize=8)
    for spec in (args.points if run == args.runs[0] else []):
      name, sep, body = spec.partition("=")
      try:
        pts = [(int(i), float(p)) for i, p in (x.split(":") for x in body.split(","))]
      except ValueError:
        pts = None
      if not sep or not pts:
        raise SystemExit(f"--points {spec!r}: expected LABEL=ITER:PERCENT,...")
      bad = [i for i, _ in pts if i not in cum]
      if bad:
        raise SystemExit(f"--points {spec!r}: {run} logged no iterations {bad}")
      axes[0].plot([cum[i] for i, _ in pts], [p for _, p in pts], "s--" if len(pts) > 1 else "*",
                   ms=6 if len(pts) > 1 else 14, label=name)
      for i, p in pts:
        table.append(f"| {name} | {i} | {cum[i]:.0f} | {p:.1f}% |")
    if train:
      xs = [t[0] for t in train]
      ys = [t[1] for t in train]
      k = max(1, args.smooth)
      sm = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
      axes[1].plot(xs, sm, label=label)
      axes[2].plot(xs, [t[2] for t in train], label=label)
    if evals:
      axes[0].plot([e[0] for e in evals], [100 * e[2] for e in evals], "o-", label=label)
      for steps, it, s in evals:
        table.append(f"| {label} | {it} | {steps:.0f} | {100 * s:.1f}% |")
      if args.wall:
        secs = seconds(run)
        axes[3].plot([secs.get(e[1], 0.0) / 3600 for e in evals], [100 * e[2] for e in evals],
                     "o-", label=label)
  axes[0].set(title="greedy eval success (%)", xlabel="env control steps")
  axes[1].set(title=f"training-rollout success ({args.smooth}-iter mean)", xlabel="env control steps")
  axes[2].set(title="student entropy per token (nats)", xlabel="env control steps")
  if args.wall:
    axes[3].set(title="greedy eval success (%)", xlabel="training hours (rollouts + updates)")
  for a in axes:
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.out, dpi=100)
  print("\n".join(table))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
