"""JSON that every parser reads: a non-finite number (the AUC of a one-class user, a mean of
nothing) is written as null, never as the NaN / Infinity tokens strict parsers refuse."""

from __future__ import annotations

import json
import math

import numpy as np


def finite(value):
  """`value` with every NaN or infinite float (numpy's too) replaced by None, recursively;
  numpy scalars become Python numbers."""
  if isinstance(value, dict):
    return {k: finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def dumps(value, **kwargs) -> str:
  """json.dumps of finite(value), refusing any NaN left (allow_nan=False)."""
  return json.dumps(finite(value), allow_nan=False, **kwargs)
