"""JAX vs PyTorch throughput, measured side by side in one process: environment steps with pixels,
student + teacher inference, and the whole OPD iteration, at several world counts and two sizes.

  python benchmarks/throughput.py                       # --batches 1,8,32 --sizes default,small
  python benchmarks/throughput.py --quick               # smallest settings (2 worlds, default size)
  python benchmarks/throughput.py --batches 8 --sizes default --figures opd --json out.json

Figures (one Markdown table each, with a JAX / PyTorch ratio column; a PNG plot, --plot):
1. env: env steps/s with both 64x64 cameras rendered at every step. JAX: the suite's batched
   step (envs.core.BatchEnv.step, MJX + the pure-JAX ray caster), jitted, from a batched reset.
   PyTorch side: vec_env.SerialVecEnv and SubprocVecEnv (MuJoCo C + MuJoCo's OpenGL renderer,
   EGL; --shadow-size: its shadow map, default the model's 4096^2), the same initial states
   (the JAX resets' qpos) and the same random actions.
2. inference: observations/s of one policy step: the student's logits, its tokens sampled at
   the rollout temperature and their log-probs, the teacher's log-probs over the bins, on a batch
   of B observations. JAX: jitted (opd_jax.policy.Policy, as the rollout acts); PyTorch:
   TorchOPD.act eager and under torch.compile (weights converted from the same JAX parameters).
3. opd: env steps/s of whole OPD iterations (rollout of B worlds to `policy_steps`, then epochs x
   minibatches gradient steps). JAX: opd_jax.iteration's setup / compile_iteration / iterate on
   configs/libero.py's default config with rollout.prompts x group = B; PyTorch:
   benchmarks/torch_baseline/opd.py (same config fields, same weights) over a chunked
   SerialVecEnv / SubprocVecEnv, eager and with torch.compile.

Sizes: "default" is the shipped libero_object student and teacher (4 layers, 128 wide, 5.0M
parameters); "small" Octo-small (12 layers, 384 wide) for both, randomly initialised (the
teacher written to a temporary checkpoint so that opd_jax's setup loads it).

Compile time is reported apart from the timed runs: JAX's lower + compile (or its load from the
persistent compilation cache, --compile_cache, on by default as in the project's CLIs); the
torch.compile warm-up (first call, or first iteration, minus nothing). In the OPD figure every
variant, JAX's included, runs one untimed iteration before the timed ones. Peak RSS: the largest
resident set of this process plus its children (psutil, sampled every 20 ms) during each
measurement, and its rise over the measurement's start. Model FLOPs come from XLA's cost
analysis of the lowered JAX programs (jax.jit(...).lower(...).cost_analysis()["flops"]): one
policy step's student + teacher forward, and one gradient step (forward + backward of the loss);
an iteration is policy_steps x the former + epochs x minibatches x the latter. Physics and
rendering are not counted. The same FLOPs are credited to PyTorch (same model, same
arithmetic). Peak FLOP/s: the best float32 matmul (n = 1024, 2048) of numpy, JAX and torch,
measured at the start of this run. Measurements share the machine with whatever else runs on it:
the load average is printed with the tables.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

try:
  import _repo_root  # noqa: F401  (this folder holds an envs.py)  isort: skip
except ImportError:  # a spawned vec-env worker: sys.path is the parent's, repository root first
  pass

from benchmarks.throughput_report import PeakRSS, matmul_peak, report, timed_loop  # noqa: E402

# Heavy imports happen in main(): SubprocVecEnv's spawned workers re-import this file.


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="smallest settings (whole run ~minutes)")
  ap.add_argument("--batches", default="1,8,32", help="world counts (figures env, inference)")
  ap.add_argument("--opd-batches", default="", help="world counts of the OPD figure "
                  "(default: --batches)")
  ap.add_argument("--sizes", default="default,small")
  ap.add_argument("--figures", default="env,inference,opd")
  ap.add_argument("--policy-steps", type=int, default=-1,
                  help="policy steps per OPD iteration (-1: to the episode's end, as the config)")
  ap.add_argument("--iterations", type=int, default=1, help="timed OPD iterations per cell")
  ap.add_argument("--min-time", type=float, default=3.0, help="seconds per env/inference cell")
  ap.add_argument("--physics", default="mjx", choices=("mjx", "c"),
                  help="the JAX suite's physics engine (env.physics)")
  ap.add_argument("--torch-envs", default="serial,subproc")
  ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
  ap.add_argument("--shadow-size", type=int, default=None,
                  help="MuJoCo's shadow map (default the model's 4096; 0: no shadows)")
  ap.add_argument("--compile_cache", default="", help="JAX's persistent compilation cache dir "
                  "(default: the project's user cache dir), or 'off'")
  ap.add_argument("--plot", default=None, help="the PNG (default docs/throughput.png when every "
                  "figure runs, else none: a partial run does not overwrite the README's plot)")
  ap.add_argument("--json", default="", help="also write every measurement here")
  args = ap.parse_args(argv)
  if args.plot is None:
    every = set(args.figures.split(",")) >= {"env", "inference", "opd"}
    args.plot = "docs/throughput.png" if every else ""
  if args.quick:
    args.batches, args.sizes, args.min_time = "2", "default", 1.0
    args.policy_steps = 4 if args.policy_steps < 0 else args.policy_steps
  batches = [int(b) for b in args.batches.split(",")]
  opd_batches = [int(b) for b in (args.opd_batches or args.batches).split(",")]
  sizes = args.sizes.split(",")
  figures = args.figures.split(",")
  bad = set(sizes) - {"default", "small"} or set(figures) - {"env", "inference", "opd"}
  if bad:
    ap.error(f"unknown sizes/figures {sorted(bad)}")
  Bench(args, batches, opd_batches, sizes, figures).run()


class Bench:
  """The three figures; every JAX / PyTorch pair measured in this process, one after the other."""

  def __init__(self, args, batches, opd_batches, sizes, figures):
    # vec_env first: it sets MUJOCO_GL before mujoco is imported; envs sets XLA's flag before JAX
    from benchmarks.torch_baseline import vec_env  # pylint: disable=import-outside-toplevel
    import envs  # noqa: F401  pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    from opd_jax import cli, compiling  # pylint: disable=import-outside-toplevel
    cache = args.compile_cache or cli.default_cache_dir()
    if cache != "off":
      compiling.enable_cache(cache)
    self.cache = cache
    torch.set_num_threads(os.cpu_count() or 1)
    self.V, self.jax, self.torch = vec_env, jax, torch
    self.args, self.batches, self.opd_batches = args, batches, opd_batches
    self.sizes, self.figures = sizes, figures
    self.tmp = tempfile.TemporaryDirectory(prefix="throughput_")
    self.results = {"env": [], "inference": [], "opd": []}
    self._policies, self._bank = {}, None
    c = self.config("default", 1)
    self.temperature, self.teacher_temperature = c.rollout.temperature, c.teacher.temperature

  # ------------------------------------------------------------------ helpers
  def log(self, msg):
    print(msg, file=sys.stderr, flush=True)

  def config(self, size: str, b: int):
    """configs/libero.py's default config for B worlds (and the small size's models)."""
    from configs import libero  # pylint: disable=import-outside-toplevel
    c = libero.get_config("object")
    group = 2 if b % 2 == 0 else 1
    c.rollout.prompts, c.rollout.group = b // group, group
    c.rollout.policy_steps = self.args.policy_steps
    c.env.physics = self.args.physics
    if size == "small":
      c.student.init = ""
      c.student.model = libero.model_config("small")
      c.teacher.checkpoint = self.small_teacher()
    return c

  def small_teacher(self) -> str:
    """A random Octo-small policy saved as an opd_jax checkpoint (the shipped teacher's meta:
    action statistics, suite options, instructions)."""
    path = os.path.join(self.tmp.name, "small_teacher")
    if not os.path.isdir(path):
      from opd_jax import checkpoint, models  # pylint: disable=import-outside-toplevel
      meta = dict(checkpoint.read_meta("pretrained/libero_object_teacher")[0])
      cfg = models.ModelConfig(size="small", proprio_encoding="pose_rotvec")
      meta["model"] = cfg.to_dict()
      checkpoint.save(checkpoint.manager(path), 0, models.make_policy(cfg, seed=1)[1], meta)
    return path

  def policies(self, size: str):
    """(student Policy, params, teacher Policy, params, env) as opd_jax's setup builds them."""
    if size not in self._policies:
      from opd_jax import build, teachers  # pylint: disable=import-outside-toplevel
      from opd_jax.objectives import OBJECTIVES  # pylint: disable=import-outside-toplevel
      c = self.config(size, 1)
      env, _ = build.make_env(c)
      stats = build.checkpoint_stats(c.teacher.checkpoint)
      assert OBJECTIVES[c.objective].needs_teacher
      student, params, _ = build.make_student(c, env, stats=stats)
      teacher = teachers.make(c.teacher, env, student)
      self._policies[size] = (student, params, teacher.policy, teacher.params, env)
    return self._policies[size]

  def torch_policies(self, size: str):
    from benchmarks.torch_baseline.policy import TorchPolicy  # pylint: disable=import-outside-toplevel
    student, params, teacher, t_params, _ = self.policies(size)
    return TorchPolicy.from_jax(student.cfg, params), TorchPolicy.from_jax(teacher.cfg, t_params)

  def bank(self):
    """The JAX suite's batched reset of max(B) worlds (compiled once): its state, for the JAX env
    figure, and its qpos / task ids, the PyTorch vec envs' initial states."""
    if self._bank is None:
      import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
      from envs.core import BatchEnv  # pylint: disable=import-outside-toplevel
      import numpy as np  # pylint: disable=import-outside-toplevel
      env = self.policies(self.sizes[0])[4]
      benv, n = BatchEnv(env), max(self.batches + self.opd_batches)
      keys = self.jax.random.split(self.jax.random.PRNGKey(0), n)
      tasks = jnp.arange(n, dtype=jnp.int32) % env.num_tasks
      t0 = time.perf_counter()
      state = self.jax.block_until_ready(self.jax.jit(benv.reset)(keys, tasks))
      self.log(f"batched reset of {n} worlds (compile + run): {time.perf_counter() - t0:.0f} s")
      self._bank = (benv, state, np.asarray(state.data.qpos, np.float64),
                    np.asarray(tasks, np.int32))
    return self._bank

  def cconfig(self):
    return self.V.CConfig.from_suite("libero_object", image_size=64, substeps=5, control="torque",
                                     shadow_size=self.args.shadow_size)

  def fwd_flops(self, size: str, b: int) -> float:
    """XLA's FLOP count of one policy step's inference (student + teacher), per observation."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    student, params, _, t_params, _ = self.policies(size)
    key = self.jax.ShapeDtypeStruct((2,), jnp.uint32)
    lowered = self.jax_act(size).lower(params, t_params, self.abstract_hist(student.cfg, b), key)
    return lowered.cost_analysis()["flops"] / b

  def grad_flops(self, size: str, n: int) -> float:
    """XLA's FLOP count of one gradient step's loss and gradient on n samples, per sample."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from opd_jax import objectives  # pylint: disable=import-outside-toplevel
    from opd_jax.rollout import Batch  # pylint: disable=import-outside-toplevel
    student, params, _, _, _ = self.policies(size)
    c, s = student.cfg, self.jax.ShapeDtypeStruct
    tok = s((n, c.chunk, c.action_dim), jnp.int32)
    flt = s((n, c.chunk, c.action_dim), jnp.float32)
    tlp = s((n, c.chunk, c.action_dim, c.num_bins), jnp.float32)
    obj = objectives.get(self.config(size, 1).objective, temperature=self.temperature)

    def loss(p, hist, tokens, mask, t_logp):
      batch = Batch(hist=hist, tokens=tokens, behaviour_logp=mask, mask=mask, step_mask=None,
                    reward=None, done=None, success=None, teacher_logp=t_logp)
      return obj(objectives.Outputs.of(student.outputs(p, hist)), batch)[0]
    lowered = self.jax.jit(self.jax.value_and_grad(loss)).lower(
        params, self.abstract_hist(c, n), tok, flt, tlp)
    return lowered.cost_analysis()["flops"] / n

  def abstract_hist(self, cfg, b):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from opd_jax.policy import History  # pylint: disable=import-outside-toplevel
    s = self.jax.ShapeDtypeStruct
    t, h = cfg.history, cfg.image_size
    return History({c: s((b, t, h, h, 3), jnp.uint8) for c in cfg.cameras},
                   s((b, t, cfg.proprio_dim), jnp.float32), s((b, t), jnp.bool_),
                   s((b,), jnp.int32))

  def jax_act(self, size: str):
    """The rollout's inference (opd_jax.rollout's act): student sample + teacher log-probs."""
    student, _, teacher, _, _ = self.policies(size)
    jax = self.jax

    def act(params, t_params, hist, key):
      out = student.outputs(params, hist)
      tokens, blogp = student.sample(out, key, self.temperature)
      t_logp = jax.nn.log_softmax(teacher.logits(t_params, hist) / self.teacher_temperature, -1)
      return tokens, blogp, t_logp
    return jax.jit(act)

  def random_hist(self, cfg, b, seed=0):
    import numpy as np  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(seed)
    t, h = cfg.history, cfg.image_size
    out = {c: rng.integers(0, 256, (b, t, h, h, 3), dtype=np.uint8) for c in cfg.cameras}
    out["proprio"] = rng.normal(0, 0.3, (b, t, cfg.proprio_dim)).astype(np.float32)
    out["timestep_pad_mask"] = np.ones((b, t), bool)
    out["task_id"] = (np.arange(b) % 10).astype(np.int32)
    return out

  # ------------------------------------------------------------------ figure 1
  def fig_env(self):
    import numpy as np  # pylint: disable=import-outside-toplevel
    jax, a = self.jax, self.args
    benv, state_all, qpos, tasks = self.bank()
    ccfg = self.cconfig()
    step = jax.jit(benv.step)
    for b in self.batches:
      rng = np.random.default_rng(b)
      state = jax.tree.map(lambda x, b=b: x[:b], state_all)
      acts = rng.uniform(-1, 1, (b, 7)).astype(np.float32)
      with PeakRSS() as rss_j:
        t0 = time.perf_counter()
        prog = step.lower(state, acts).compile()
        compile_s = time.perf_counter() - t0
        state = jax.block_until_ready(prog(state, acts))
        holder = [state]

        def one():
          holder[0] = prog(holder[0], rng.uniform(-1, 1, (b, 7)).astype(np.float32))
          return holder[0]
        calls, _ = timed_loop(one, a.min_time, 3, jax.block_until_ready)
      jax_sps = b * calls
      self.log(f"env JAX b={b}: {jax_sps:.1f} env steps/s (compile {compile_s:.0f} s)")
      for kind in a.torch_envs.split(","):
        with PeakRSS() as rss_t:
          t0 = time.perf_counter()
          venv = (self.V.SerialVecEnv(b, ccfg, qpos, tasks) if kind == "serial" else
                  self.V.SubprocVecEnv(b, ccfg, qpos, tasks, num_workers=min(b, os.cpu_count())))
          try:
            venv.reset()
            venv.step(rng.uniform(-1, 1, (b, 7)))
            start_s = time.perf_counter() - t0
            calls, _ = timed_loop(lambda venv=venv: venv.step(rng.uniform(-1, 1, (b, 7))),
                                  a.min_time, 3)
          finally:
            venv.close()
        self.log(f"env torch {kind} b={b}: {b * calls:.1f} env steps/s")
        self.results["env"].append(dict(
            size="-", worlds=b, jax=jax_sps, jax_compile_s=compile_s, jax_rss=str(rss_j),
            torch_variant=f"{kind}VecEnv", torch=b * calls, torch_warmup_s=start_s,
            torch_rss=str(rss_t)))

  # ------------------------------------------------------------------ figure 2
  def fig_inference(self, peak):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from benchmarks.torch_baseline import opd  # pylint: disable=import-outside-toplevel
    from opd_jax.policy import History  # pylint: disable=import-outside-toplevel
    jax, torch, a = self.jax, self.torch, self.args
    for size in self.sizes:
      student, params, teacher, t_params, env = self.policies(size)
      act = self.jax_act(size)
      for b in self.batches:
        fwd_flops = self.fwd_flops(size, b)
        obs = self.random_hist(student.cfg, b)
        hist = History({c: obs[c] for c in student.cfg.cameras}, obs["proprio"],
                       obs["timestep_pad_mask"], obs["task_id"])
        keys = iter(jax.random.split(jax.random.PRNGKey(0), 100000))
        with PeakRSS() as rss_j:
          t0 = time.perf_counter()
          prog = act.lower(params, t_params, hist, next(keys)).compile()
          compile_s = time.perf_counter() - t0
          jax_ops, _ = timed_loop(lambda: prog(params, t_params, hist, next(keys)),
                                  a.min_time, 3, jax.block_until_ready)
        jax_ops *= b
        self.log(f"inference JAX {size} b={b}: {jax_ops:.1f} obs/s (compile {compile_s:.0f} s)")
        th = {k: torch.from_numpy(np.asarray(v)) for k, v in obs.items()}
        th["task_id"] = th["task_id"].long()
        for compiled in [False] + ([] if a.no_compile else [True]):
          s_t, t_t = self.torch_policies(size)
          runner = opd.TorchOPD(s_t, t_t, student.stats, env.instructions, None,
                                opd.OPDConfig(temperature=self.temperature,
                                              teacher_temperature=self.teacher_temperature),
                                compile=compiled)
          with PeakRSS() as rss_t:
            t0 = time.perf_counter()
            runner.act(th)
            warm_s = time.perf_counter() - t0
            ops, _ = timed_loop(lambda runner=runner: runner.act(th), a.min_time, 3)
          ops *= b
          name = "torch.compile" if compiled else "eager"
          self.log(f"inference torch {name} {size} b={b}: {ops:.1f} obs/s (first call "
                   f"{warm_s:.1f} s)")
          self.results["inference"].append(dict(
              size=size, worlds=b, jax=jax_ops, jax_compile_s=compile_s, jax_rss=str(rss_j),
              torch_variant=name, torch=ops, torch_warmup_s=warm_s, torch_rss=str(rss_t),
              flops_per_step=fwd_flops, jax_flops_pct=100 * jax_ops * fwd_flops / peak,
              torch_flops_pct=100 * ops * fwd_flops / peak))

  # ------------------------------------------------------------------ figure 3
  def fig_opd(self, peak):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from benchmarks.torch_baseline import opd  # pylint: disable=import-outside-toplevel
    from opd_jax import compiling, iteration  # pylint: disable=import-outside-toplevel
    from opd_jax.train_state import TrainState  # pylint: disable=import-outside-toplevel
    jax, a = self.jax, self.args
    _, _, qpos, tasks = self.bank()
    ccfg = self.cconfig()
    kinds = ["serial"] if a.quick else a.torch_envs.split(",")
    variants = [(kind, False) for kind in kinds] + ([] if a.no_compile else [(kinds[-1], True)])
    for size in self.sizes:
      for b in self.opd_batches:
        c = self.config(size, b)
        su = iteration.setup(c)
        o = c.optim
        t_mb = su.num_steps // o.minibatches
        it_flops = (su.num_steps * b * self.fwd_flops(size, b)
                    + su.num_updates * t_mb * b * self.grad_flops(size, t_mb * b))
        ts = TrainState(jnp.int32(0), su.params, su.tx.init(su.params), jnp.int32(0))
        t_params = su.teacher.params
        with PeakRSS() as rss_j:
          t0 = time.perf_counter()
          with compiling.count_cache_events() as ev:
            iteration.compile_iteration(su, ts, t_params)
          compile_s = time.perf_counter() - t0
          ts, _, _ = iteration.iterate(su, ts, t_params, 0)   # untimed warm-up, as torch's
          steps = secs = 0.0
          for i in range(1, 1 + a.iterations):
            t0 = time.perf_counter()
            ts, m, _ = iteration.iterate(su, ts, t_params, i)
            m = jax.device_get(m)
            secs += time.perf_counter() - t0
            steps += float(m["rollout/control_steps"])
        jax_sps, jax_its = steps / secs, a.iterations / secs
        how = f"{ev.hits} cached / {ev.hits + ev.misses}" if self.cache != "off" else "no cache"
        self.log(f"opd JAX {size} b={b}: {jax_sps:.1f} env steps/s, {secs / a.iterations:.1f} s "
                 f"per iteration (compile {compile_s:.0f} s, {how})")
        cfg = opd.OPDConfig.from_config(c, su.num_steps)
        for kind, compiled in variants:
          s_t, t_t = self.torch_policies(size)
          with PeakRSS() as rss_t:
            venv = opd.make_venv(kind, b, ccfg, qpos, tasks, workers=min(b, os.cpu_count()))
            try:
              run = opd.TorchOPD(s_t, t_t, su.student.stats, su.env.instructions, venv, cfg,
                                 compile=compiled)
              t0 = time.perf_counter()   # one untimed iteration (torch.compile compiles)
              run.iterate()
              warm_s = time.perf_counter() - t0
              ms = [run.iterate() for _ in range(a.iterations)]
            finally:
              venv.close()
          t_secs = sum(m["iteration_s"] for m in ms)
          t_sps = sum(m["control_steps"] for m in ms) / t_secs
          name = f"{'torch.compile' if compiled else 'eager'}, {kind}"
          self.log(f"opd torch {name} {size} b={b}: {t_sps:.1f} env steps/s, "
                   f"{t_secs / a.iterations:.1f} s per iteration (rollout "
                   f"{ms[-1]['rollout_s']:.1f} s: policy {ms[-1]['policy_s']:.1f}, env "
                   f"{ms[-1]['env_s']:.1f}; update {ms[-1]['update_s']:.1f} s)")
          self.results["opd"].append(dict(
              size=size, worlds=b, jax=jax_sps, jax_compile_s=compile_s, jax_rss=str(rss_j),
              jax_cache=how, torch_variant=name, torch=t_sps, torch_warmup_s=warm_s,
              torch_rss=str(rss_t), policy_steps=su.num_steps, grad_steps=su.num_updates,
              jax_s_per_it=secs / a.iterations, torch_s_per_it=t_secs / a.iterations,
              flops_per_iteration=it_flops, jax_flops_pct=100 * jax_its * it_flops / peak,
              torch_flops_pct=100 * it_flops / (t_secs / a.iterations) / peak,
              torch_split={k: ms[-1][k] for k in ("policy_s", "env_s", "update_s")}))

  # ------------------------------------------------------------------ all
  def run(self):
    a = self.args
    t_start = time.perf_counter()
    mm = matmul_peak(self.jax, self.torch)
    peak = max(mm.values())
    self.log("matmul FLOP/s: " + ", ".join(f"{k} {v / 1e9:.1f} G" for k, v in mm.items()))
    if "env" in self.figures:
      self.fig_env()
    if "inference" in self.figures:
      self.fig_inference(peak)
    if "opd" in self.figures:
      self.fig_opd(peak)
    report(self.results, a, mm, peak, time.perf_counter() - t_start,
           f"jax {self.jax.__version__} (physics {a.physics}), torch {self.torch.__version__}")


if __name__ == "__main__":
  main()
