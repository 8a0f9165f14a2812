"""Rule-based grouping of behaviors by play-completion ratio (TWIN-V2 section 3.2.1)."""

from __future__ import annotations

import numpy as np


def completion_ratio(play_time: np.ndarray, duration: np.ndarray) -> np.ndarray:
  """r = min(play_time / duration, 1) per behavior; NaN where duration is unknown (0).

  Args:
    play_time: (N,) seconds played, >= 0.
    duration: (N,) item length in seconds, > 0, or 0 for unknown.
  Returns:
    (N,) float32 in [0, 1] or NaN.
  """
  play_time = np.asarray(play_time, dtype=np.float32)
  duration = np.asarray(duration, dtype=np.float32)
  known = duration > 0
  ratio = np.full(play_time.shape, np.nan, dtype=np.float32)
  ratio[known] = np.minimum(play_time[known] / duration[known], 1.0)
  return ratio


def completion_groups(play_time: np.ndarray, duration: np.ndarray,
                      num_groups: int) -> np.ndarray:
  """Group id per behavior: M equal-width bins of r in [0, 1], r = 1 in the top bin.

  Returns:
    (N,) int64 in [0, num_groups - 1], or num_groups for unknown duration.
  """
  ratio = completion_ratio(play_time, duration)
  groups = np.full(ratio.shape, num_groups, dtype=np.int64)
  known = ~np.isnan(ratio)
  groups[known] = np.minimum((ratio[known] * num_groups).astype(np.int64), num_groups - 1)
  return groups
