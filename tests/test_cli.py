"""The command line: bad input is one line and exit 2 before anything compiles; the README's
commands parse; a second run loads its programs from the persistent compilation cache."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from opd_jax import average, cli, collect, evaluate, sft, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = {
    "train": dict(main=train.main, config_file="configs/libero.py", validate=train.validate),
    "sft": dict(main=sft.main, config_file="configs/libero.py:object,sft", validate=sft.validate),
    "collect": dict(main=collect.main, default_config=collect.default_config,
                    validate=collect.validate),
    "evaluate": dict(main=evaluate.main, default_config=evaluate.default_config,
                     validate=evaluate.validate),
    "average": dict(main=average.main, default_config=average.default_config,
                    validate=average.validate),
}


def _refused(capsys, tool, args):
  """Runs ``tool args`` in this process; returns its one stderr line (exit status 2)."""
  spec = dict(TOOLS[tool])
  main = spec.pop("main")
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(tool, main, [tool] + args, **spec)
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2, (args, err)
  assert len(err) == 1 and err[0].startswith(f"{tool}: error: "), (args, err)
  return err[0]


@pytest.mark.parametrize("tool,args,match", [
    ("train", ["--config.nonexistent=1"], r"config has no field 'nonexistent'"),
    ("train", ["--config.optim.lrr=1e-3"], r"did you mean config\.optim\.lr\?"),
    ("train", ["--config.optim.lr=-1"], r"config\.optim\.lr: must be a positive number, got -1"),
    ("train", ["--config.optim.lr=abc"], r"--config\.optim\.lr=abc: could not convert"),
    ("train", ["--config.seed.x=1"], r"config\.seed is a value"),
    ("train", ["--config=configs/nope.py"], r"no such file 'configs/nope.py'"),
    ("train", ["--config=configs/libero.py:spatial,fast"], r"unknown argument\(s\) \['fast'\]"),
    ("train", ["--config.student.model.size=small"],
     r"config\.student\.model\.size: is ignored: student\.init=\S+ fixes the architecture"),
    ("train", ["--config=configs/libero.py:spatial", "--config.student.model.chunk=32",
               "--config.env.max_episode_steps=16"],
     r"config\.student\.model\.chunk: 32 is longer than the 16-step episodes"),
    ("train", ["--config.teacher.kind=checkpoint", "--config.teacher.checkpoint="],
     r"config\.teacher\.checkpoint: teacher\.kind='checkpoint' needs a path"),
    ("train", ["--config.objective=reverse_kld"], r"config\.objective: 'reverse_kld' is not one"),
    ("train", ["--host_devices=-1"], r"--host_devices must be >= 0"),
    ("train", ["--config.mesh.fsdp=0"], r"config\.mesh\.fsdp: must be >= 1"),
    ("train", ["--config.mesh.data=0"], r"config\.mesh\.data: must be -1 \(every device\) or >= 1"),
    ("train", ["stray"], r"unexpected argument"),
    ("sft", [], r"config\.data\.path: give the demos"),
    ("collect", [], r"config\.out: give the HDF5 file"),
    ("collect", ["--config.out=x.hdf5", "--config.suite=libero_nope"], r"config\.suite: 'libero_nope'"),
    ("evaluate", [], r"config\.checkpoint: give the policy"),
    ("evaluate", ["--config.checkpoint=/nowhere"], r"checkpoint path /nowhere does not exist"),
    ("evaluate", ["--config.checkpoint=x", "--config.episodes=0"], r"config\.episodes: must be >= 1"),
    ("evaluate", ["--config.checkpoint=x", "--config.tasks=1,b"], r"config\.tasks: comma-separated"),
    ("evaluate", ["--config.checkpoint=x", "--config.physics=gpu"], r"config\.physics: must be one of"),
    ("evaluate", ["--config.checkpoint=pretrained/libero_object_1demo", "--config.tasks=3,12"],
     r"config\.tasks: \[12\] out of range: libero_object has tasks 0\.\.9"),
    ("average", ["--config.steps=1:2"], r"config\.checkpoints: required"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tool, args, match):
  line = _refused(capsys, tool, args)
  assert re.search(match, line), line


def test_setup_errors_are_one_line(capsys, tmp_path):
  """Errors found while building (a student or teacher checkpoint that does not exist) are
  one line too: they come before anything compiles."""
  base = ["--config=configs/libero.py:spatial,runlocal", f"--config.workdir={tmp_path}"]
  line = _refused(capsys, "train", base + ["--config.teacher.kind=checkpoint",
                                           "--config.teacher.checkpoint=/nowhere"])
  assert "checkpoint path /nowhere does not exist" in line
  line = _refused(capsys, "train", base + ["--config.student.init=/nowhere/student"])
  assert "checkpoint path /nowhere/student does not exist" in line
  # impossible combinations found while building (this process has one device)
  for args, match in (
      (["--config.mesh.fsdp=2"], r"config\.mesh\.fsdp=2 must be >= 1 and divide the 1 device\(s\)"),
      (["--config.mesh.data=4"], r"config\.mesh\.data=4 x config\.mesh\.fsdp=1 devices, but 1 are "
                                 r"visible"),
      (["--config.eval.tasks=(3,12)"], r"config\.eval\.tasks: \[12\] out of range"),
      (["--config.env.suite=libero_object", "--config.teacher.kind=checkpoint",
        "--config.teacher.checkpoint=pretrained/libero_object_teacher"],
       r"teacher model expects 64x64 images but the suite renders 32x32")):
    line = _refused(capsys, "train", base + args)
    assert re.search(match, line), line


def _readme_commands():
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  cmds = []
  blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
  for line in re.findall(r"python -m opd_jax\.\w+[^`\n]*", blocks):
    cmds.append(shlex.split(line.replace("\\", ""), comments=True))
  return cmds


def test_readme_commands_parse():
  """Every ``python -m opd_jax.TOOL ...`` in the README's code blocks names a tool, and its
  config file, variant and overrides load (nothing runs)."""
  cmds = _readme_commands()
  assert len(cmds) >= 5
  for argv in cmds:
    tool = argv[2].split(".")[-1]
    if tool == "pretrained":
      continue
    spec = dict(TOOLS[tool])
    spec.pop("main"), spec.pop("validate")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
      inv = cli.parse(tool, [tool] + [a for a in argv[3:] if not a.startswith("#")], **spec)
    finally:
      os.chdir(cwd)
    assert inv.tool == tool


@pytest.mark.ci_full
def test_second_run_loads_its_programs_from_the_cache(tmp_path):
  """The runlocal job twice with one compilation cache: the first compiles its rollout and
  gradient step, the second loads both (counted by JAX's cache events) and their traced
  form (opd_jax.traced), and its first iteration computes exactly what the first run's did."""
  cmd = [sys.executable, "-m", "opd_jax.train", "--config=configs/libero.py:object,runlocal",
         "--config.iterations=1", "--config.eval.every=0", f"--compile_cache={tmp_path / 'cache'}"]
  outs = []
  for run in ("first", "second"):
    p = subprocess.run(cmd + [f"--config.workdir={tmp_path / run}"], cwd=REPO, text=True,
                       capture_output=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    outs.append(p.stderr)
  assert "the rollout, the gradient step: compiled in" in outs[0], outs[0][-2000:]
  assert "the rollout, the gradient step: loaded from the compilation cache" in outs[1], outs[1][-2000:]
  assert "traced programs loaded" in outs[1] and "traced programs loaded" not in outs[0]
  assert os.listdir(tmp_path / "cache")
  first, second = (json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0])
                   for run in ("first", "second"))
  learned = [k for k in first if k.startswith("train/") or k == "rollout/success"]
  assert learned and {k: first[k] for k in learned} == {k: second[k] for k in learned}
  for err in outs:   # startup noise is silenced
    assert "Failed to import warp" not in err and "cpu_aot_loader" not in err
