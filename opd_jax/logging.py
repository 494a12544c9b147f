"""Metric sinks at the edge: JSONL, TensorBoard and the progress bar.

The workdir may be local or object storage (``gs://...``, through ``etils.epath``); object
stores cannot append, so there the JSONL file is rewritten whole at every write, and
TensorBoard events are written only to local workdirs."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
from etils import epath


class MetricWriter:
  """Appends ``{"step": s, "time": t, **scalars}`` lines to ``metrics.jsonl`` and
  writes the same scalars as TensorBoard events (``tb/``)."""

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    self.enabled = enabled   # False: writes nothing (the other processes of a multi-host run)
    self._tb = None
    if not enabled:
      return
    root = epath.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    self.path = root / "metrics.jsonl"
    self._remote = "://" in str(workdir)
    self._text = (self.path.read_text() if self.path.exists() else "") if self._remote else ""
    if tensorboard and self._remote:
      print(f"metrics: {self.path} only (TensorBoard events are written to local workdirs)")
    elif tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # optional dependency: JSONL still written
        self._tb = None

  def write(self, step: int, scalars: dict) -> dict:
    row = {k: _scalar(v) for k, v in scalars.items()}
    if not self.enabled:
      return row
    line = json.dumps({"step": int(step), "time": time.time(), **row}) + "\n"
    if self._remote:
      self._text += line
      self.path.write_text(self._text)
    else:
      with self.path.open("a") as f:
        f.write(line)
    if self._tb is not None:
      for k, v in row.items():
        if isinstance(v, float) and math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))
      self._tb.flush()
    return row

  def close(self):
    if self._tb is not None:
      self._tb.close()


def _scalar(v):
  a = np.asarray(v)
  return float(a) if a.size == 1 else a.tolist()


def read_jsonl(path: str) -> list[dict]:
  with epath.Path(path).open() as f:
    return [json.loads(line) for line in f if line.strip()]
