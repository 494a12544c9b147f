"""One command-line convention for every tool (train, sft, collect, evaluate, average).

Settings are an ml_collections ConfigDict: ``--config=FILE[:ARG]`` picks a config file
(train and sft; collect, evaluate and average have a built-in default), and every field is
overridable as ``--config.a.b=value``. Beside it, each tool takes

  --host_devices=N     CPU only: expose N host devices (batch sizes are per device, so N
                       devices run N times the worlds of one)
  --compile_cache=DIR  JAX's persistent compilation cache (default: a user cache dir;
                       ``off`` disables it): a second run loads its programs instead of
                       compiling them again
  --distributed        multi-host: ``jax.distributed.initialize()`` first

Bad input is one line on stderr naming the field, what was wrong and what would be right,
and exit status 2, before anything compiles: tools raise :class:`UsageError` (or a
``ValueError`` inside :func:`usage_errors`) for it. Each tool prints its effective config.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import json
import logging
import os
import sys
import textwrap
from typing import Any, Callable, Iterator, NoReturn, Sequence

EXIT_USAGE = 2


class UsageError(ValueError):
  """Bad input from the user: printed as one line, exit status 2."""


class RunError(RuntimeError):
  """A run that cannot go on (e.g. training stuck on non-finite numbers): one line naming
  where it stopped and what is saved, exit status 1."""


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
  """Turns the ``ValueError`` s of a block (validation, loading and checking checkpoints,
  building the suite: everything before the first compile) into :class:`UsageError`."""
  try:
    yield
  except UsageError:
    raise
  except ValueError as e:
    raise UsageError(str(e)) from e


@dataclasses.dataclass(frozen=True)
class Invocation:
  """What a tool was started with."""
  tool: str
  config: Any                    # ml_collections.ConfigDict, overrides applied
  source: str                    # the config file spec, or "built-in"
  overrides: tuple[str, ...]     # dotted field paths given on the command line
  host_devices: int
  compile_cache: str             # a directory, or "" when off
  distributed: bool


def fail(tool: str, message: str) -> NoReturn:
  print(f"{tool}: error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "opd_jax", "jax_compilation_cache")


def quiet_startup() -> None:
  """Silences backend-probe noise: JAX's note that no TPU is present, absl/orbax INFO chatter
  (XLA's C++ log is quieted in opd_jax/__init__.py, before jaxlib loads)."""
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  try:
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    absl_logging.set_verbosity(absl_logging.WARNING)
  except ImportError:  # pragma: no cover
    pass


# ------------------------------------------------------------------ config files
def load_config_file(spec: str):
  """``FILE[:ARG]`` -> ``get_config(ARG)`` of the Python file FILE (a ``UsageError`` for a
  missing file, a file without ``get_config`` or an argument it refuses)."""
  path, _, arg = spec.partition(":")
  if not path.endswith(".py"):
    raise UsageError(f"--config={spec}: expected a Python config file, e.g. "
                     f"--config=configs/libero.py:object")
  if not os.path.isfile(path):
    raise UsageError(f"--config={spec}: no such file {path!r} (run from the repository root, "
                     f"or give its path)")
  module_spec = importlib.util.spec_from_file_location("_opd_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"--config={spec}: {path} defines no get_config()")
  try:
    return module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    raise UsageError(str(e)) from e


def _override_paths(argv: Sequence[str], name: str = "config") -> list[tuple[str, str]]:
  """(dotted path, the argument as given) of every ``--config.a.b[=v]`` in ``argv``."""
  out = []
  for a in argv:
    for prefix in (f"--{name}.", f"--no{name}."):
      if a.startswith(prefix):
        out.append((a[len(prefix):].split("=", 1)[0], a))
  return out


def check_overrides(config, argv: Sequence[str]) -> tuple[str, ...]:
  """Every override names an existing field, else a UsageError with the closest names."""
  from ml_collections import ConfigDict  # pylint: disable=import-outside-toplevel
  paths = []
  for path, given in _override_paths(argv):
    node, walked = config, "config"
    for part in path.split("."):
      if not isinstance(node, ConfigDict):
        raise UsageError(f"{given}: {walked} is a value ({node!r}), it has no field {part!r}")
      if part not in node:
        keys = sorted(node.keys())
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f"did you mean {walked}.{close[0]}? " if close else ""
        raise UsageError(f"{given}: {walked} has no field {part!r}; {hint}"
                         f"its fields are {', '.join(keys)}")
      node, walked = node[part], f"{walked}.{part}"
    paths.append(path)
  return tuple(paths)


def flatten(config, prefix: str = "") -> dict[str, Any]:
  from ml_collections import ConfigDict  # pylint: disable=import-outside-toplevel
  out = {}
  for k in config.keys():
    v = config[k]
    if isinstance(v, ConfigDict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def describe(inv: Invocation, writes: str) -> str:
  """The effective config, wrapped, and where the tool writes."""
  items = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                   for k, v in flatten(inv.config).items())
  head = f"{inv.tool}: config {inv.source}"
  if inv.overrides:
    head += f" with --config.{{{', '.join(inv.overrides)}}}"
  body = textwrap.fill(items, width=100, initial_indent="  ", subsequent_indent="  ",
                       break_on_hyphens=False, break_long_words=False)
  cache = inv.compile_cache or "off"
  return f"{head}\n{body}\n{inv.tool}: writes {writes}; compilation cache {cache}"


def save_config(inv: Invocation, directory: str) -> None:
  from etils import epath  # pylint: disable=import-outside-toplevel
  d = epath.Path(directory)   # local or object storage
  d.mkdir(parents=True, exist_ok=True)
  (d / f"{inv.tool}_config.json").write_text(json.dumps(
      dict(source=inv.source, overrides=list(inv.overrides), config=inv.config.to_dict()),
      indent=1, default=str))


# --------------------------------------------------------------------------- parse
def _pop_config_spec(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      argv.pop(i)
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      argv.pop(i)
      return argv.pop(i)
  return None


def parse(tool: str, argv: Sequence[str], *, config_file: str | None = None,
          default_config: Callable[[], Any] | None = None) -> Invocation:
  """Parses a tool's command line (``argv[0]`` is the program). ``config_file``: the default
  ``--config`` spec; ``default_config``: the built-in config when the tool has no file."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  argv = list(argv)
  spec = _pop_config_spec(argv) or config_file
  if spec:
    base, source = load_config_file(spec), spec
  else:
    base, source = default_config(), "built-in"
  overrides = check_overrides(base, argv)
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_dict("config", base, flag_values=fv, sys_argv=argv)
  flags.DEFINE_integer("host_devices", 0, "CPU only: expose N host devices", flag_values=fv)
  flags.DEFINE_string("compile_cache", "", "persistent compilation cache dir, or 'off'",
                      flag_values=fv)
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first",
                    flag_values=fv)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise UsageError(str(e).replace("flag --", "--")) from e
  if len(rest) > 1:
    raise UsageError(f"unexpected argument(s) {rest[1:]}: settings are --config.FIELD=VALUE")
  if fv.host_devices < 0:
    raise UsageError(f"--host_devices must be >= 0, got {fv.host_devices}")
  cache = fv.compile_cache
  cache = "" if cache == "off" else (cache or default_cache_dir())
  return Invocation(tool, holder.value, source, overrides, fv.host_devices, cache,
                    fv.distributed)


def start_jax(inv: Invocation) -> None:
  """Applies what must precede JAX's backend: host devices, the compilation cache."""
  if inv.host_devices > 0:
    flag = f"--xla_force_host_platform_device_count={inv.host_devices}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
  import envs  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from opd_jax import compiling  # pylint: disable=import-outside-toplevel
  if inv.compile_cache:
    compiling.enable_cache(inv.compile_cache)
  if inv.distributed:
    import jax  # pylint: disable=import-outside-toplevel
    # Cloud TPU and SLURM are discovered by JAX; elsewhere (several processes on one machine,
    # plain VMs) JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID say it.
    kw = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                              ("process_id", "JAX_PROCESS_ID")) if v in os.environ}
    if os.environ.get("JAX_PLATFORMS", "") == "cpu" or not _has_accelerator():
      jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU processes talk
    jax.distributed.initialize(**kw)


def _has_accelerator() -> bool:
  """Whether a GPU or TPU plugin is installed (probed without starting JAX's backends)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  return any(importlib.util.find_spec(m) is not None
             for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu", "jax_rocm60_plugin"))


def run(tool: str, main: Callable[[Invocation], Any], argv: Sequence[str] | None = None, *,
        config_file: str | None = None, default_config: Callable[[], Any] | None = None,
        validate: Callable[[Any, tuple[str, ...]], None] | None = None) -> Any:
  """The whole command line of a tool: parse, validate, start JAX, run ``main``; a
  UsageError anywhere ends it with one line and exit status 2."""
  quiet_startup()
  argv = sys.argv if argv is None else argv
  try:
    inv = parse(tool, argv, config_file=config_file, default_config=default_config)
    if validate is not None:
      with usage_errors():
        validate(inv.config, inv.overrides)
    start_jax(inv)
    return main(inv)
  except UsageError as e:
    fail(tool, str(e))
  except RunError as e:
    print(f"{tool}: stopped: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(1)
