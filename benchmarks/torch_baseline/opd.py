"""On-policy distillation in PyTorch: opd_jax's OPD iteration written the way a PyTorch user
would, for a side-by-side with the JAX trainer (benchmarks/throughput.py).

    python benchmarks/torch_baseline/opd.py --worlds 2 --iterations 2 --policy-steps 4

One iteration (as opd_jax.iteration.iterate):
1. rollout: the B worlds of a vector env (vec_env.py: MuJoCo C + MuJoCo's renderer) start fresh
   episodes; for ``num_steps`` policy steps the student samples an action chunk (K tokens per
   action dim, softmax(logits / temperature)) from its observation history under
   ``torch.no_grad()``, the teacher's log-probs over the bins are taken on the same
   observations, the tokens are decoded to actions as opd_jax.actions.decode does (bin centre,
   then the q01/q99 statistics), the chunk runs open-loop and both cameras render once after it.
   A world whose episode ends stops contributing: its later tokens are masked.
2. update: ``epochs x minibatches`` gradient steps, minibatch i taking the contiguous policy steps
   of part i % minibatches; the loss is opd_jax.objectives.distill's ``reverse_kl`` (the sampled
   estimator) or ``reverse_kl_exact`` (summed over bins), token means over unmasked tokens;
   ``torch.optim.AdamW`` with a linear warm-up from 0 (LambdaLR, as optax's join of a linear and a
   constant schedule), global-norm clipping written as optax's clip_by_global_norm, and the
   guarded update's skip of a non-finite loss or gradient.

``compile=True`` wraps the student's and teacher's forward passes (acting) and the loss function
(student forward + loss, differentiated by AOTAutograd) in ``torch.compile``.

Differences from the JAX iteration, none of which changes the work counted as env steps: episodes
end at the time limit only unless the CConfig has ``check_success`` (the JAX suite evaluates its
success predicates at every step); a chunk stops stepping a world when its episode ends (JAX
computes the frozen world's steps and discards them); worlds whose episode ended are auto-reset
by the vec env and keep stepping, masked, as the JAX worlds do.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

if __name__ == "__main__":  # the repository root on sys.path (before `envs`/`opd_jax` imports)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.torch_baseline import vec_env as V  # noqa: E402  (sets MUJOCO_GL etc. first)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.torch_baseline.policy import TorchPolicy, tokenize  # noqa: E402
from opd_jax.actions import MIN_RANGE, NUM_BINS  # noqa: E402


# ----------------------------------------------------------------------------- actions
class TokenDecoder:
  """opd_jax.actions.decode in torch: int tokens [..., D] -> float32 actions [..., D]."""

  def __init__(self, stats):
    self.q01 = torch.as_tensor(np.asarray(stats.q01, np.float32))
    rng = np.maximum(np.asarray(stats.q99, np.float32) - np.asarray(stats.q01, np.float32),
                     np.float32(MIN_RANGE))
    self.range = torch.as_tensor(rng)
    self.mask = torch.as_tensor(np.asarray(stats.mask, bool))

  def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
    centre = (tokens.clamp(0, NUM_BINS - 1).float() + 0.5) * (2.0 / NUM_BINS) - 1.0
    raw = (centre + 1.0) * 0.5 * self.range + self.q01
    return torch.where(self.mask, raw, centre)


# ------------------------------------------------------------------------------ losses
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  return (x * mask).sum() / mask.sum().clamp_min(1.0)


def reverse_kl(logits, tokens, mask, behaviour_logp, teacher_logp, temperature: float = 1.0,
               clip_eps: float | None = None) -> torch.Tensor:
  """distill.reverse_kl: -mean(ratio * r), r = log pT(a) - log pS(a) held constant,
  ratio = pS(a) / p_behaviour(a); optionally PPO-clipped."""
  logp = F.log_softmax(logits / temperature, -1)
  tok = logp.gather(-1, tokens.long()[..., None])[..., 0]
  reward = (teacher_logp.gather(-1, tokens.long()[..., None])[..., 0] - tok).detach()
  ratio = torch.exp(tok - behaviour_logp.detach())
  surrogate = ratio * reward
  if clip_eps is not None:
    surrogate = torch.minimum(surrogate, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * reward)
  return -masked_mean(surrogate, mask)


def reverse_kl_exact(logits, mask, teacher_logp, temperature: float = 1.0) -> torch.Tensor:
  """distill.reverse_kl_exact: per token sum_v pS(v) (log pS(v) - log pT(v)), masked mean."""
  logp = F.log_softmax(logits / temperature, -1)
  kl = (logp.exp() * (logp - teacher_logp.detach())).sum(-1)
  return masked_mean(kl, mask)


# ------------------------------------------------------------------- chunked vector envs
def run_chunk(world: V.CSuite, actions: np.ndarray) -> tuple[np.ndarray, bool, float]:
  """Steps one world through a chunk [K, 7] without rendering (envs' step_chunk renders only
  after the chunk), stopping at the episode's end. Returns (executed [K], done, reward)."""
  executed, done, reward = np.zeros(len(actions), np.float32), False, 0.0
  renderer, world.renderer = world.renderer, None  # observe() skips the cameras meanwhile
  try:
    for k, a in enumerate(actions):
      _, reward, done = world.step(a)
      executed[k] = 1.0
      if done:
        break
  finally:
    world.renderer = renderer
  return executed, done, reward


class SerialChunkEnv(V.SerialVecEnv):
  """SerialVecEnv with ``step_chunk(actions [n, K, 7]) -> (obs, executed [n, K], done [n],
  reward [n])``: images once per chunk; a world whose episode ended restarts (auto-reset)."""

  def step_chunk(self, actions):
    out, executed = [], np.zeros(actions.shape[:2], np.float32)
    done, reward = np.zeros(self.n, bool), np.zeros(self.n, np.float32)
    for i, w in enumerate(self.worlds):
      executed[i], done[i], reward[i] = run_chunk(w, actions[i])
      out.append(self._reset_world(i) if done[i] else w.observe())
    return V._stack(out), executed, done, reward  # pylint: disable=protected-access


class SubprocChunkEnv(V.SubprocVecEnv):
  """SubprocVecEnv whose workers run whole chunks (one round trip per policy step)."""
  serial_cls = SerialChunkEnv

  def step_chunk(self, actions):
    return self._scatter("step_chunk", actions)


# ---------------------------------------------------------------------------- the loop
@dataclasses.dataclass
class OPDConfig:
  """The fields of configs/libero.py an OPD iteration reads (defaults: its default config)."""
  num_steps: int = 36
  objective: str = "reverse_kl_exact"   # or "reverse_kl"
  temperature: float = 0.5
  teacher_temperature: float = 1.0
  clip_eps: float | None = None
  lr: float = 3e-5
  warmup: int = 10
  b1: float = 0.9
  b2: float = 0.999
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  epochs: int = 2
  minibatches: int = 4

  @classmethod
  def from_config(cls, config, num_steps: int) -> "OPDConfig":
    o = config.optim
    if o.get("optimizer", "adamw") != "adamw" or o.get("schedule", "constant") != "constant":
      raise ValueError("the PyTorch OPD loop implements AdamW with a constant schedule only")
    return cls(num_steps=num_steps, objective=config.objective,
               temperature=config.rollout.temperature,
               teacher_temperature=config.teacher.temperature,
               clip_eps=config.clip_eps if config.clip_eps > 0 else None, lr=o.lr,
               warmup=o.warmup, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
               grad_clip=o.grad_clip, epochs=o.epochs, minibatches=o.minibatches)


def make_optimizer(params, c: OPDConfig):
  """AdamW + LambdaLR: lr x min(step / warmup, 1), step 0 first (optax's schedule count)."""
  opt = torch.optim.AdamW(params, lr=c.lr, betas=(c.b1, c.b2), eps=1e-8,
                          weight_decay=c.weight_decay)
  warm = max(c.warmup, 1)
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(step / warm, 1.0))


def guarded_step(params, opt, sched, grad_clip: float, loss=None) -> tuple[float, bool]:
  """opd_jax.train_state.guarded_update's step on the gradients in ``p.grad``: global-norm
  clipping as optax.clip_by_global_norm (g / norm x clip when norm >= clip), the optimiser and
  the schedule; nothing changes when the loss or the norm is non-finite. -> (norm, applied)."""
  for p in params:  # optax sees zeros for parameters the loss does not reach (weight decay)
    if p.grad is None:
      p.grad = torch.zeros_like(p)
  grads = [p.grad for p in params]
  norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
  if not (torch.isfinite(norm) and (loss is None or torch.isfinite(loss))):
    return float(norm), False
  if norm >= grad_clip:  # pylint: disable=protected-access
    torch._foreach_div_(grads, norm)
    torch._foreach_mul_(grads, grad_clip)
  opt.step()
  sched.step()
  return float(norm), True


class TorchOPD:
  """Student, teacher (TorchPolicy), a chunked vec env and the optimiser; ``iterate()``."""

  def __init__(self, student: TorchPolicy, teacher: TorchPolicy, stats, instructions, venv,
               cfg: OPDConfig, *, compile: bool = False, seed: int = 0):  # noqa: A002
    if cfg.objective not in ("reverse_kl", "reverse_kl_exact"):
      raise ValueError(f"objective must be reverse_kl or reverse_kl_exact, got {cfg.objective!r}")
    if cfg.num_steps % cfg.minibatches:
      raise ValueError(f"minibatches={cfg.minibatches} must divide num_steps={cfg.num_steps}")
    s, t = student.cfg, teacher.cfg
    if (s.chunk, s.action_dim, s.num_bins) != (t.chunk, t.action_dim, t.num_bins):
      raise ValueError("teacher and student must share chunk, action dims and bins")
    self.student, self.teacher, self.venv, self.cfg = student, teacher, venv, cfg
    self.decode = TokenDecoder(stats)
    self.history = max(s.history, t.history)
    self.text = {p: tuple(map(torch.from_numpy, tokenize(list(instructions), p.cfg.text_len,
                                                         p.cfg.vocab_size)))
                 for p in (student, teacher)}
    self.params = [p for p in student.parameters()]
    for p in teacher.parameters():
      p.requires_grad_(False)
    self.opt, self.sched = make_optimizer(self.params, cfg)
    torch.manual_seed(seed)
    self.nonfinite_updates = 0
    self.iteration = 0
    self.compiled = compile
    fwd_s, fwd_t, loss = student, teacher, self._loss
    if compile:
      fwd_s, fwd_t = torch.compile(student), torch.compile(teacher)
      loss = torch.compile(self._loss)
    self.fwd_student, self.fwd_teacher, self.loss_fn = fwd_s, fwd_t, loss

  # ---------------------------------------------------------------- observations
  def _history(self, obs, hist=None):
    """Appends obs to the history window (the first obs of an episode fills it, earlier
    slots marked as padding, as opd_jax.policy.init_history)."""
    new = {c: torch.from_numpy(obs[c]) for c in V.CAMERAS}
    new["proprio"] = torch.from_numpy(obs["proprio"])
    if hist is None:
      b, n = len(obs["proprio"]), self.history
      hist = {k: v[:, None].repeat_interleave(n, 1) for k, v in new.items()}
      hist["timestep_pad_mask"] = (torch.arange(n) == n - 1).expand(b, n).clone()
    else:
      hist = {k: torch.cat([v[:, 1:], new[k][:, None] if k in new else
                            torch.ones_like(v[:, :1])], 1)
              for k, v in hist.items() if k != "task_id"}
    hist["task_id"] = torch.from_numpy(np.asarray(obs["task_id"], np.int64))
    return hist

  def _inputs(self, policy, hist):
    h = policy.cfg.history
    obs = {c: hist[c][:, -h:] for c in policy.cfg.cameras}
    obs["proprio"], obs["timestep_pad_mask"] = hist["proprio"][:, -h:], hist["timestep_pad_mask"][:, -h:]
    ids, mask = self.text[policy]
    return obs, ids[hist["task_id"]], mask[hist["task_id"]]

  # -------------------------------------------------------------------- rollout
  @torch.no_grad()
  def act(self, hist: dict):
    """One policy step's inference: the student's tokens [B, K, D] drawn at the temperature,
    their log-probs, and the teacher's log-probs over the bins [B, K, D, V]."""
    c = self.cfg
    logits = self.fwd_student(*self._inputs(self.student, hist))["logits"]
    dist = torch.distributions.Categorical(logits=logits / c.temperature)
    tokens = dist.sample()
    t_logits = self.fwd_teacher(*self._inputs(self.teacher, hist))["logits"]
    return tokens, dist.log_prob(tokens), F.log_softmax(t_logits / c.teacher_temperature, -1)

  @torch.no_grad()
  def rollout(self) -> tuple[dict, dict]:
    c = self.cfg
    t_policy = t_env = 0.0
    obs = self.venv.reset()
    hist = self._history(obs)
    b = len(obs["proprio"])
    alive = torch.ones(b)
    steps = []
    for _ in range(c.num_steps):
      t0 = time.perf_counter()
      tokens, blogp, t_logp = self.act(hist)
      actions = self.decode(tokens).numpy()
      t1 = time.perf_counter()
      obs, executed, done, _ = self.venv.step_chunk(actions)
      t_env += time.perf_counter() - t1
      t_policy += t1 - t0
      executed = torch.from_numpy(executed) * alive[:, None]
      mask = executed[:, :, None].expand(tokens.shape)
      steps.append(dict(hist=hist, tokens=tokens, behaviour_logp=blogp, teacher_logp=t_logp,
                        mask=mask, step_mask=alive.clone()))
      alive = alive * (1.0 - torch.from_numpy(done).float())
      hist = self._history(obs, hist)
    batch = {k: torch.stack([s[k] for s in steps]) for k in steps[0] if k != "hist"}
    batch["hist"] = {k: torch.stack([s["hist"][k] for s in steps]) for k in hist}
    control_steps = float(batch["mask"][..., 0].sum())
    return batch, dict(control_steps=control_steps, policy_s=t_policy, env_s=t_env)

  # --------------------------------------------------------------------- update
  def _loss(self, obs, ids, text_mask, tokens, mask, behaviour_logp, teacher_logp):
    logits = self.student(obs, ids, text_mask)["logits"]
    c = self.cfg
    if c.objective == "reverse_kl_exact":
      return reverse_kl_exact(logits, mask, teacher_logp, c.temperature)
    return reverse_kl(logits, tokens, mask, behaviour_logp, teacher_logp, c.temperature,
                      c.clip_eps)

  def gradient_step(self, loss: torch.Tensor) -> float:
    """backward, then :func:`guarded_step`. Returns the gradient's global norm."""
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    norm, applied = guarded_step(self.params, self.opt, self.sched, self.cfg.grad_clip, loss)
    self.nonfinite_updates += not applied
    return norm

  def update(self, batch: dict) -> dict:
    c = self.cfg
    t_mb = c.num_steps // c.minibatches
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  [t_mb, B, ...] -> [t_mb*B, ...]
    losses, norms = [], []
    for i in range(c.epochs * c.minibatches):
      sl = slice((i % c.minibatches) * t_mb, (i % c.minibatches + 1) * t_mb)
      hist = {k: flat(v[sl]) for k, v in batch["hist"].items()}
      obs, ids, text_mask = self._inputs(self.student, hist)
      loss = self.loss_fn(obs, ids, text_mask, *(flat(batch[k][sl]) for k in (
          "tokens", "mask", "behaviour_logp", "teacher_logp")))
      norms.append(self.gradient_step(loss))
      losses.append(float(loss.detach()))
    return dict(loss=losses[0], loss_last=losses[-1], grad_norm=norms[0])

  def iterate(self) -> dict:
    """One iteration: rollout, then epochs x minibatches gradient steps. Metrics include
    ``control_steps`` (env steps that ran) and ``env_steps_per_s`` over the whole iteration."""
    t0 = time.perf_counter()
    batch, m = self.rollout()
    t1 = time.perf_counter()
    m.update(self.update(batch))
    t2 = time.perf_counter()
    self.iteration += 1
    m.update(rollout_s=t1 - t0, update_s=t2 - t1, iteration_s=t2 - t0,
             env_steps_per_s=m["control_steps"] / (t2 - t0),
             nonfinite_updates=self.nonfinite_updates)
    return m


# --------------------------------------------------------------------------- building
def load_policy(path: str):
  """(TorchPolicy, ModelConfig, ActionStats, meta) from an opd_jax checkpoint / shipped policy."""
  from opd_jax import checkpoint  # pylint: disable=import-outside-toplevel
  _, params, cfg, stats, meta = checkpoint.load_policy(path)
  return TorchPolicy.from_jax(cfg, params), cfg, stats, meta


def random_policy(cfg, seed: int = 0) -> TorchPolicy:
  """A TorchPolicy holding opd_jax.models.make_policy(cfg, seed)'s random initialisation."""
  from opd_jax import models  # pylint: disable=import-outside-toplevel
  return TorchPolicy.from_jax(cfg, models.make_policy(cfg, seed=seed)[1])


def make_venv(kind: str, n: int, cfg: V.CConfig, qpos, task_ids, workers: int | None = None):
  """"serial" (one process) or "subproc" (``workers`` processes) chunked vector env."""
  if kind == "serial":
    return SerialChunkEnv(n, cfg, qpos, task_ids)
  if kind == "subproc":
    return SubprocChunkEnv(n, cfg, qpos, task_ids, num_workers=workers)
  raise ValueError(f"vec env must be 'serial' or 'subproc', got {kind!r}")


def main(argv=None):
  import argparse  # pylint: disable=import-outside-toplevel
  ap = argparse.ArgumentParser(description="PyTorch OPD iterations on a LIBERO suite")
  ap.add_argument("--suite", default="libero_object")
  ap.add_argument("--student", default="pretrained/libero_object_1demo")
  ap.add_argument("--teacher", default="pretrained/libero_object_teacher")
  ap.add_argument("--worlds", type=int, default=8)
  ap.add_argument("--iterations", type=int, default=2)
  ap.add_argument("--policy-steps", type=int, default=0, help="0: to the episode's end")
  ap.add_argument("--vec-env", default="serial", choices=("serial", "subproc"))
  ap.add_argument("--shadow-size", type=int, default=None)
  ap.add_argument("--compile", action="store_true")
  args = ap.parse_args(argv)
  torch.set_num_threads(os.cpu_count() or 1)
  student, scfg, stats, meta = load_policy(args.student)
  teacher = load_policy(args.teacher)[0]
  ccfg = V.CConfig.from_suite(args.suite, image_size=scfg.image_size, shadow_size=args.shadow_size)
  c = OPDConfig()
  if args.policy_steps:
    c.num_steps = args.policy_steps
  else:
    c.num_steps = c.minibatches * math.ceil(ccfg.max_episode_steps / scfg.chunk / c.minibatches)
  qpos, tasks = V.initial_states(args.suite, args.worlds)
  venv = make_venv(args.vec_env, args.worlds, ccfg, qpos, tasks)
  try:
    opd = TorchOPD(student, teacher, stats, meta["instructions"], venv, c, compile=args.compile)
    for i in range(args.iterations):
      m = opd.iterate()
      print(f"iteration {i + 1}: {m['control_steps']:.0f} env steps in {m['iteration_s']:.1f} s "
            f"({m['env_steps_per_s']:.1f}/s; rollout {m['rollout_s']:.1f} s = policy "
            f"{m['policy_s']:.1f} + env {m['env_s']:.1f}, update {m['update_s']:.1f} s), "
            f"loss {m['loss']:.4f}")
  finally:
    venv.close()


if __name__ == "__main__":
  main()
