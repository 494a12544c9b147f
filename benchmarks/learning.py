"""The paper's learning experiments on libero_object, one command each (resumable).

  python benchmarks/learning.py ablation [--iterations 40] [--seeds 0] [--report]
  python benchmarks/learning.py groups | efficiency | forgetting | expert [--runs a,b]

Each experiment is a set of training runs of ``python -m opd_jax.train --config
configs/libero.py`` (from the shipped one-demo student and teacher unless a run says
otherwise) that differ in a few ``--config.*`` flags. The runs go one after another under
``nice`` into ``runs/learning/EXPERIMENT/RUN_sSEED`` (a stopped experiment resumes with the
same command: finished runs are skipped, a stopped run resumes from its checkpoint). Then,
or with ``--report`` alone, it writes ``benchmarks/learning/EXPERIMENT.md`` (a table per run:
greedy success at each evaluation, environment steps, entropy and wall time) and
``docs/learning_EXPERIMENT.png`` (success and entropy against environment steps).

Each run's ``metrics.jsonl`` is copied to ``benchmarks/learning/metrics/EXPERIMENT/RUN_sSEED/``
(committed, ~1 kB per iteration), and the report reads that copy where ``runs/`` is gone, so
the tables survive a new machine. Physics: MuJoCo's C engine by default (``--physics c``, ~5x
MJX's iteration rate on a CPU host; the shipped teacher scores 80.8% under it against 81.0%
under MJX on the 500 evaluation episodes).
"""
from __future__ import annotations

import _repo_root  # noqa: F401  pylint: disable=unused-import  isort: skip

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys

from benchmarks.opd_curve import load, read_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Experiment:
  question: str
  runs: dict[str, tuple[str, ...]]   # name -> --config.* flags of opd_jax.train
  # name -> --config.* flags of opd_jax.sft (configs/libero.py:object,sft) on the demos of
  # DATA, for GRADIENT_STEPS x iterations steps: the on-policy runs' number of gradient steps
  sft: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


_GRPO = ("--config.objective=grpo", "--config.rollout.group=4", "--config.rollout.prompts=2",
         "--config.rl.refill_rounds=1")

TRAINED = (0, 1, 2, 3, 4)   # the forgetting experiment's post-training tasks

EXPERIMENTS = {
    "ablation": Experiment(
        "Which objective: per-token reverse KL (sampled, exact), forward KL, hard CE. The "
        "paper: forward KL's entropy explodes, hard CE's collapses, reverse KL stays bounded. "
        "The sampled estimator's second epoch is off-policy, so it is PPO-clipped (0.2).",
        {o: (f"--config.objective={o}", *(("--config.clip_eps=0.2",) if o == "reverse_kl" else ()))
         for o in ("reverse_kl", "reverse_kl_exact", "forward_kl", "hard_ce")}),
    "groups": Experiment(
        "Group size at a fixed batch of 8 worlds: G worlds share a task and initial state "
        "(the paper: OPD is stable even at G = 2).",
        {f"G{g}": (f"--config.rollout.group={g}", f"--config.rollout.prompts={8 // g}")
         for g in (2, 4, 8)}),
    "efficiency": Experiment(
        "Sample efficiency from the same one-demo student: OPD against GRPO (sparse success, "
        "groups of 4, one refill round) at OPD's rollout temperature, and the two summed (the "
        "paper's Distill + GRPO). grpo_t16 samples at 1.6, as the teacher's GRPO refinement "
        "does: the one-demo student then never succeeds, so no group carries a signal. "
        "opd_lr1e-4: OPD at 3x the default fine-tuning learning rate.",
        {"opd": (), "grpo": _GRPO, "opd_grpo": ("--config.objective=reverse_kl+grpo", *_GRPO[1:]),
         "grpo_t16": (*_GRPO, "--config.rollout.temperature=1.6"),
         "opd_lr1e-4": ("--config.optim.lr=1e-4",)}),
    "forgetting": Experiment(
        "Forgetting: the one-demo student (SFT on all ten tasks) post-trained on tasks 0-4 only, "
        "evaluated on all ten, so tasks 5-9 show what post-training on the others costs: by OPD, "
        "by GRPO, and by SFT on the 50 expert demos of each of the five tasks (the same number "
        "of gradient steps as the on-policy runs, 8 per iteration; the iteration column counts "
        "SFT steps / 8).",
        {name: (*flags, f"--config.env.tasks=({','.join(map(str, TRAINED))})",
                "--config.eval.tasks=(0,1,2,3,4,5,6,7,8,9)")
         for name, flags in (("opd", ()), ("grpo", _GRPO))},
        sft={"sft": ("--config.sft.init=pretrained/libero_object_1demo",
                     f"--config.data.tasks=({','.join(map(str, TRAINED))})")}),
    "expert": Experiment(
        "The privileged scripted expert as the teacher (free, valid at any state, but the "
        "pixel student cannot see what it sees), with and without DAgger-style aggregation "
        "(_agg: the last 160 worlds kept, 8 of them replayed beside each iteration's 8).",
        {f"{o}{agg}": ("--config.teacher.kind=scripted", "--config.teacher.checkpoint=",
                       f"--config.objective={o}", *flags)
         for o in ("reverse_kl_exact", "forward_kl", "hard_ce")
         for agg, flags in (("", ()), ("_agg", ("--config.aggregate.worlds=160",
                                                "--config.aggregate.replay=8")))}),
}


# Runs with the same flags as another experiment's run share its workdir (run once).
SAME_AS = {("ablation", "reverse_kl_exact"): ("efficiency", "opd"),
           ("groups", "G2"): ("efficiency", "opd")}   # G2 x 4 prompts is the default config


def workdir(exp: str, run: str, seed: int) -> str:
  exp, run = SAME_AS.get((exp, run), (exp, run))
  return os.path.join("runs", "learning", exp, f"{run}_s{seed}")


def kept(wd: str) -> str:
  """Where the repository keeps a run's metrics: runs/learning/X -> benchmarks/learning/metrics/X."""
  return os.path.join("benchmarks", "learning", "metrics", os.path.relpath(wd, "runs/learning"))


def source(wd: str) -> str | None:
  """The run's metrics, freshly copied into the repository when the run is on this machine;
  else the copy kept there; None when neither exists."""
  here, copy = os.path.join(REPO, wd), os.path.join(REPO, kept(wd))
  if os.path.exists(os.path.join(here, "metrics.jsonl")):
    os.makedirs(copy, exist_ok=True)
    shutil.copyfile(os.path.join(here, "metrics.jsonl"), os.path.join(copy, "metrics.jsonl"))
  return copy if os.path.exists(os.path.join(copy, "metrics.jsonl")) else None


GRADIENT_STEPS = 8   # per iteration of the default config (optim.epochs x optim.minibatches)
DATA = "data/libero_object_64.hdf5"
COLLECT = ("-m", "opd_jax.collect", "--config.suite=libero_object", "--config.demos_per_task=50",
           "--config.image_size=64", "--config.batch=32", f"--config.out={DATA}")


def command(exp: str, run: str, seed: int, iterations: int, every: int, physics: str = "c",
            episodes: int = 10) -> list[str]:
  wd = workdir(exp, run, seed)
  common = [f"--config.workdir={wd}", f"--config.seed={seed}", f"--config.env.physics={physics}",
            f"--config.eval.episodes_per_task={episodes}", "--config.eval.videos=0"]
  if run in EXPERIMENTS[exp].sft:
    return [sys.executable, "-m", "opd_jax.sft", "--config=configs/libero.py:object,sft", *common,
            f"--config.sft.steps={GRADIENT_STEPS * iterations}",
            f"--config.eval.every={GRADIENT_STEPS * every}",
            f"--config.checkpoint.every={GRADIENT_STEPS * 5}", f"--config.data.path={DATA}",
            *EXPERIMENTS[exp].sft[run]]
  return [sys.executable, "-m", "opd_jax.train", "--config=configs/libero.py", *common,
          f"--config.iterations={iterations}", f"--config.eval.every={every}",
          "--config.checkpoint.every=5", *EXPERIMENTS[exp].runs[run]]


def finished(wd: str, iterations: int, remake: bool = False) -> bool:
  """The run has reached ``iterations`` here, or (unless ``remake``) in its kept metrics."""
  src = os.path.join(REPO, wd) if remake else source(wd)
  if src is None or not os.path.exists(os.path.join(src, "metrics.jsonl")):
    return False
  return max((r["step"] for r in read_rows(src)), default=0) >= iterations


def held_out(run: str, per_iteration: int = 1) -> str:
  """``iteration: trained% / held-out%`` at each evaluation of a forgetting run (an SFT run's
  steps divided by ``per_iteration``)."""
  rows = [r for r in read_rows(run) if "eval/task_9" in r]

  def mean(r, tasks):
    return 100 * sum(r[f"eval/task_{t}"] for t in tasks) / len(tasks)
  rest = [t for t in range(10) if t not in TRAINED]
  return ", ".join(f"{r['step'] // per_iteration}: {mean(r, TRAINED):.0f} / {mean(r, rest):.0f}"
                   for r in rows)


def reached(evals, target: float) -> str:
  """The environment steps at the first evaluation with success >= target, else the best."""
  for steps, it, s in evals:
    if s >= target:
      return f"{steps:.0f} (iteration {it})"
  best = max(evals, key=lambda e: round(e[2], 6), default=None)   # the first of equals
  return "-" if best is None else f"not reached (best {100 * best[2]:.0f}% at {best[1]})"


def report(exp: str, seeds: list[int], teacher: float, physics: str = "c",
           episodes: int = 10) -> str:
  e = EXPERIMENTS[exp]
  target = 0.8 * teacher
  lines = [f"## {exp}", "", e.question, "",
           "| run | seed | iterations | env steps | greedy success at each evaluation (iteration: %) "
           f"| env steps to {100 * target:.0f}% (80% of the teacher's {100 * teacher:.1f}%) "
           "| env steps to +10 points over its start "
           "| entropy first -> last 5 iterations | s/iteration |",
           "|---|---|---|---|---|---|---|---|---|"]
  runs = []
  for name in [*e.runs, *e.sft]:
    for seed in seeds:
      wd = workdir(exp, name, seed)
      src = source(wd)
      if src is None:
        continue
      if name in e.sft:   # offline: no env steps, no rollout entropy, not on the plot
        lines.append(f"| {name} (SFT) | {seed} | - | 0 | "
                     f"{held_out(src, GRADIENT_STEPS)} "
                     f"| - | - | - | - |")
        continue
      train, evals, cum = load(src)
      ent = [t[2] for t in train if t[2] is not None]
      secs = [r["time/iteration_s"] for r in read_rows(src)
              if "time/iteration_s" in r]
      ev = ", ".join(f"{it}: {100 * s:.0f}" for _, it, s in evals)
      if exp == "forgetting":
        ev = held_out(src)
      ent_s = (f"{sum(ent[:5]) / len(ent[:5]):.2f} -> {sum(ent[-5:]) / len(ent[-5:]):.2f}"
               if ent else "-")
      lines.append(f"| {name} | {seed} | {max(cum, default=0)} | {max(cum.values(), default=0):.0f} "
                   f"| {ev} | {reached(evals, target)} "
                   f"| {reached(evals, evals[0][2] + 0.1) if evals else '-'} | {ent_s} "
                   f"| {sum(secs) / max(len(secs), 1):.1f} |")
      runs.append((src, f"{name} s{seed}"))
  cmd = (f"python benchmarks/learning.py {exp} --seeds {','.join(map(str, seeds))} "
         f"--physics {physics} --eval_episodes {episodes}")
  lines += ["", f"Greedy success on {episodes} evaluation states per task ({10 * episodes} "
            f"episodes: a 95% interval of about +-{196 * (0.25 / (10 * episodes)) ** 0.5:.0f} "
            f"points at 50%), {physics} physics.",
            "", f"Made by `{cmd}`: each run is `python -m opd_jax.train --config=configs/libero.py` "
            f"(SFT runs: `python -m opd_jax.sft --config=configs/libero.py:object,sft`) "
            f"with the flags of its name in benchmarks/learning.py, its seed and "
            f"`--config.workdir={workdir(exp, 'RUN', 0)[:-3]}_sSEED`; its metrics are kept in "
            f"`{kept(workdir(exp, 'RUN', 0))[:-3]}_sSEED/`."]
  if runs:
    out = os.path.join("docs", f"learning_{exp}.png")
    subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "opd_curve.py"),
                    *[r for r, _ in runs], "--labels", ",".join(l for _, l in runs),
                    "--out", out, "--smooth", "5", "--wall"], cwd=REPO, check=True,
                   capture_output=True)
    lines += ["", f"![{exp}](../../{out})"]
  md = "\n".join(lines) + "\n"
  os.makedirs(os.path.join(REPO, "benchmarks", "learning"), exist_ok=True)
  with open(os.path.join(REPO, "benchmarks", "learning", f"{exp}.md"), "w") as f:
    f.write(md)
  return md


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("experiment", choices=sorted(EXPERIMENTS))
  ap.add_argument("--iterations", type=int, default=40)
  ap.add_argument("--eval_every", type=int, default=10)
  ap.add_argument("--seeds", default="0", help="comma-separated")
  ap.add_argument("--runs", default="", help="comma-separated run names (default: all)")
  ap.add_argument("--report", action="store_true", help="only write the table and the plot")
  ap.add_argument("--remake", action="store_true",
                  help="run again what is finished only in the kept metrics (for its checkpoints)")
  ap.add_argument("--physics", default="c", choices=("c", "mjx"),
                  help="the runs' env.physics (default c: MuJoCo's C engine, for CPU hosts)")
  ap.add_argument("--eval_episodes", type=int, default=10,
                  help="evaluation states per task at each evaluation (default 10)")
  ap.add_argument("--teacher", type=float, default=0.81,
                  help="the teacher's greedy success (default: pretrained/libero_object_teacher "
                       "on the 500 evaluation episodes), for the steps-to-80%%-of-teacher column")
  args = ap.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  names = list(EXPERIMENTS[args.experiment].runs) + list(EXPERIMENTS[args.experiment].sft)
  chosen = [r for r in args.runs.split(",") if r] or names
  if unknown := sorted(set(chosen) - set(names)):
    ap.error(f"--runs: unknown run(s) {unknown} for {args.experiment}; choose from {names}")
  if not args.report:
    for name in chosen:
      for seed in seeds:
        wd = workdir(args.experiment, name, seed)
        sft = name in EXPERIMENTS[args.experiment].sft
        if finished(wd, args.iterations * (GRADIENT_STEPS if sft else 1), args.remake):
          continue
        if sft and not os.path.exists(os.path.join(REPO, DATA)):   # the expert demos
          print(" ".join(COLLECT), flush=True)
          subprocess.run(["nice", "-n", "5", sys.executable, *COLLECT], cwd=REPO, check=True)
        cmd = command(args.experiment, name, seed, args.iterations, args.eval_every,
                      args.physics, args.eval_episodes)
        print(" ".join(cmd[1:]), flush=True)
        os.makedirs(os.path.join(REPO, wd), exist_ok=True)
        with open(os.path.join(REPO, wd + ".log"), "a") as log:
          subprocess.run(["nice", "-n", "5", *cmd], cwd=REPO, stdout=log, stderr=log, check=True)
  print(report(args.experiment, seeds, args.teacher, args.physics, args.eval_episodes))


if __name__ == "__main__":
  main()
