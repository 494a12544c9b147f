"""Metric sinks at the edge: JSONL, TensorBoard and the progress bar."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np


class MetricWriter:
  """Appends ``{"step": s, "time": t, **scalars}`` lines to ``metrics.jsonl`` and
  writes the same scalars as TensorBoard events (``tb/``)."""

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    self.enabled = enabled   # False: writes nothing (the other processes of a multi-host run)
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # optional dependency: JSONL still written
        self._tb = None

  def write(self, step: int, scalars: dict) -> dict:
    row = {k: _scalar(v) for k, v in scalars.items()}
    if not self.enabled:
      return row
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), "time": time.time(), **row}) + "\n")
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
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
