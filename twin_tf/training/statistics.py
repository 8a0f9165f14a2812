"""Dense "other features" of an impression: user, item and user-item statistics
(features.DENSE_FEATURES, in that order).

TWIN's top MLP takes, besides the sequence modules, statistics a production CTR model always
has. Every statistic of an impression at time t reads only behaviors with timestamp < t
(strictly: events in the same second are excluded), so none can see the impression's own
label or anything after it. Counts enter as log1p, rates are smoothed toward 1/2 with one
pseudo-positive and one pseudo-negative ((positives + 1) / (count + 2)), and the completion
ratio (min(play_time / duration, 1); rating / 5 on MovieLens) is averaged over behaviors with a
known duration.

  user_log_count                 log1p(the user's behaviors before t)
  user_positive_rate             smoothed click rate of those behaviors
  user_recent_positive_rate      the same over the RECENT most recent of them
  user_completion_mean, _std     completion ratio of those behaviors
  user_log_gap_days              log1p(days since the user's previous behavior)
  user_log_tenure_days           log1p(days since the user's first behavior)
  user_category_share            share of those behaviors in the target's category (the
                                 FeatureSpec's primary item feature)
  user_category_positive_rate    smoothed click rate in the target's category
  item_log_count                 log1p(every user's behaviors on the item before t)
  item_positive_rate             their smoothed click rate
  item_completion_mean           their mean completion ratio (1/2 when none is known)
  item_log_age_days              log1p(days since the item's first behavior, any user)
A user or item without any earlier behavior gets count 0, rates 1/2 and days 0.
"""

from __future__ import annotations

import numpy as np

from twin_tf.clustering.grouping import completion_ratio
from twin_tf.data import schema
from twin_tf.model import features

USER_FEATURES, ITEM_FEATURES = features.USER_DENSE, features.ITEM_DENSE
DENSE_FEATURES = features.DENSE_FEATURES
RECENT = 20
DAY = 86400.0


def _rate(positives, count):
  return (positives + 1.0) / (count + 2.0)


def _log_days(seconds):
  return np.log1p(np.maximum(seconds, 0) / DAY)


def _prefix(values) -> np.ndarray:
  """Cumulative sums with a leading 0: sums over [a, b) are prefix[b] - prefix[a]."""
  return np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])


# The totals of one item over a span of behaviors, the columns of an item_totals table: the
# behaviors, their labels, their known completion ratios' sum and count, the first timestamp
# (inf for none). Sums over spans add, first times take the minimum.
TOTALS = ("count", "positives", "completion_sum", "completion_count", "first_time")
_FIRST = TOTALS.index("first_time")


def item_statistics(columns: dict[str, np.ndarray], earlier: np.ndarray | None = None
                    ) -> np.ndarray:
  """ITEM_FEATURES of every behavior: its item's behaviors (any user) strictly before it.

  Args:
    columns: behavior columns (schema fields), any row order, any number of items.
    earlier: optional (N, len(TOTALS)) per row, the totals of the row's item over behaviors
      that are not in `columns` and all strictly before every row of that item in it (the
      earlier time buckets of item_totals / earlier_totals); None: `columns` is everything.
  Returns:
    (N, len(ITEM_FEATURES)) float32, rows in the order of `columns`.
  """
  items, times = columns[schema.ITEM_ID], columns[schema.TIMESTAMP]
  order = np.lexsort((times, items))
  items, times = items[order], times[order]
  ratio = completion_ratio(columns[schema.PLAY_TIME], columns[schema.DURATION])[order]
  known = ~np.isnan(ratio)
  n = len(order)
  new_item = np.r_[True, items[1:] != items[:-1]] if n else np.zeros(0, bool)
  new_moment = new_item | (np.r_[True, times[1:] != times[:-1]] if n else new_item)
  item_start = np.maximum.accumulate(np.where(new_item, np.arange(n), 0))
  moment_start = np.maximum.accumulate(np.where(new_moment, np.arange(n), 0))
  if earlier is None:
    earlier_count = earlier_positives = earlier_sum = earlier_known = np.zeros(n)
    earlier_first = np.full(n, np.inf)
  else:
    earlier_count, earlier_positives, earlier_sum, earlier_known, earlier_first = (
        earlier[order].T)  # in TOTALS order
  count = (moment_start - item_start) + earlier_count  # strictly earlier, same item
  positives = _prefix(columns[schema.LABEL][order])
  completion_sum, completion_count = _prefix(np.where(known, ratio, 0.0)), _prefix(known)
  known_before = completion_count[moment_start] - completion_count[item_start] + earlier_known
  completion_mean = np.where(
      known_before > 0, (completion_sum[moment_start] - completion_sum[item_start]
                         + earlier_sum) / np.maximum(known_before, 1), 0.5)
  first = np.minimum(earlier_first, times[item_start])
  age = np.where(count > 0, times - first, 0)
  stats = np.stack([np.log1p(count),
                    _rate(positives[moment_start] - positives[item_start] + earlier_positives,
                          count),
                    completion_mean, _log_days(age)], axis=1)
  out = np.empty_like(stats, dtype=np.float32)
  out[order] = stats
  return out


def item_totals(columns: dict[str, np.ndarray], buckets: np.ndarray) -> dict[str, np.ndarray]:
  """The TOTALS of each (item, bucket) of the rows.

  Args:
    columns: behavior columns (schema fields), any order; buckets: (N,) int64 per row.
  Returns:
    {"item": (G,), "bucket": (G,), "totals": (G, len(TOTALS)) float64}, sorted by
    (item, bucket); merge_totals adds tables of the same keys.
  """
  order = np.lexsort((buckets, columns[schema.ITEM_ID]))
  ratio = completion_ratio(columns[schema.PLAY_TIME], columns[schema.DURATION])[order]
  known = ~np.isnan(ratio)
  values = np.stack([np.ones(len(order)), columns[schema.LABEL][order],
                     np.where(known, ratio, 0.0), known,
                     columns[schema.TIMESTAMP][order].astype(np.float64)], axis=1)
  return _sum_by_key(columns[schema.ITEM_ID][order], buckets[order], values)


def _sum_by_key(items: np.ndarray, buckets: np.ndarray, values: np.ndarray
                ) -> dict[str, np.ndarray]:
  """Rows sorted by (item, bucket) -> one row per key: sums, the minimum first time."""
  if not len(items):
    return {"item": items, "bucket": buckets, "totals": values.reshape(0, len(TOTALS))}
  starts = np.flatnonzero(np.r_[True, (items[1:] != items[:-1]) |
                                (buckets[1:] != buckets[:-1])])
  totals = np.add.reduceat(values, starts, axis=0)
  totals[:, _FIRST] = np.minimum.reduceat(values[:, _FIRST], starts)
  return {"item": items[starts], "bucket": buckets[starts], "totals": totals}


def merge_totals(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Several item_totals tables -> one, the totals of equal keys combined."""
  table = schema.concat(tables)
  order = np.lexsort((table["bucket"], table["item"]))
  return _sum_by_key(table["item"][order], table["bucket"][order], table["totals"][order])


def earlier_totals(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A merged item_totals table -> the same keys, each with the totals of its item's
  earlier buckets (zeros and first time inf for an item's first bucket). Buckets must
  follow time (every behavior of a bucket before every one of a later bucket), e.g.
  timestamp // width."""
  totals = table["totals"]
  running = np.cumsum(totals, axis=0) - totals  # exclusive, over the whole table
  first_row = np.r_[True, table["item"][1:] != table["item"][:-1]] if len(totals) else (
      np.zeros(0, bool))
  start = np.maximum.accumulate(np.where(first_row, np.arange(len(totals)), 0))
  earlier = running - running[start]
  earlier[:, _FIRST] = np.where(first_row, np.inf, totals[start, _FIRST])
  return {"item": table["item"], "bucket": table["bucket"], "totals": earlier}


def user_statistics(history: dict[str, np.ndarray], history_end: np.ndarray,
                    target_category: np.ndarray, target_time: np.ndarray,
                    category: str) -> np.ndarray:
  """USER_FEATURES of one user's impressions.

  Args:
    history: the user's behavior columns sorted by timestamp (T,).
    history_end: (I,) per impression, the number of behaviors with timestamp < its time.
    target_category, target_time: (I,) the impressions' item category and timestamp.
    category: the history column that holds the category (FeatureSpec.primary).
  Returns:
    (I, len(USER_FEATURES)) float32.
  """
  times, labels = history[schema.TIMESTAMP], history[schema.LABEL]
  ratio = completion_ratio(history[schema.PLAY_TIME], history[schema.DURATION])
  known = ~np.isnan(ratio)
  end = np.asarray(history_end, np.int64)
  target_category = np.asarray(target_category, np.int64)
  target_time = np.asarray(target_time, np.int64)
  count = end.astype(np.float64)
  positives = _prefix(labels)
  recent_start = np.maximum(end - RECENT, 0)
  completion_count, completion_sum = _prefix(known), _prefix(np.where(known, ratio, 0.0))
  completion_sq = _prefix(np.where(known, ratio, 0.0) ** 2)
  known_count = np.maximum(completion_count[end], 1)
  mean = completion_sum[end] / known_count
  std = np.sqrt(np.maximum(completion_sq[end] / known_count - mean ** 2, 0))
  last = times[np.maximum(end - 1, 0)] if len(times) else np.zeros_like(end)
  first = times[0] if len(times) else 0
  # Behaviors of the target's category before `end`: keys (category code, position) sorted;
  # codes index the user's distinct categories (a target's unseen category gets its own).
  width = len(times) + 1
  seen, code = np.unique(history[category], return_inverse=True)
  at = np.minimum(np.searchsorted(seen, target_category), max(len(seen) - 1, 0))
  target_code = np.where(seen[at] == target_category, at, len(seen)) if len(seen) else \
      np.zeros_like(target_category)
  keys = np.sort(code * width + np.arange(len(times)))
  by_key = np.argsort(code * width + np.arange(len(times)), kind="stable")
  low = np.searchsorted(keys, target_code * width)
  high = np.searchsorted(keys, target_code * width + end)
  category_positives = _prefix(labels[by_key])
  in_category = (high - low).astype(np.float64)
  stats = np.stack([
      np.log1p(count), _rate(positives[end], count),
      _rate(positives[end] - positives[recent_start], end - recent_start),
      np.where(end > 0, mean, 0.0), np.where(end > 0, std, 0.0),
      np.where(end > 0, _log_days(target_time - last), 0.0),
      np.where(end > 0, _log_days(target_time - first), 0.0),
      in_category / np.maximum(count, 1),
      _rate(category_positives[high] - category_positives[low], in_category)], axis=1)
  return stats.astype(np.float32)
