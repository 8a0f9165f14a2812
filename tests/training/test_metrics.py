"""Metrics against values worked out by hand."""

import math

import numpy as np

from twin_tf.training import metrics

# user 1: labels 1,0,1 scores .9,.3,.2 -> pairs (.9>.3) yes, (.2>.3) no -> AUC 1/2
# user 2: labels 0,1 scores .5,.5 -> tie -> 1/2 ... use .4,.6 -> 1
# user 3: labels 1,1 -> one class, skipped
LABELS = np.array([1, 0, 1, 0, 1, 1, 1])
SCORES = np.array([.9, .3, .2, .4, .6, .8, .7])
USERS = np.array([1, 1, 1, 2, 2, 3, 3])


def test_auc_by_hand():
  # positives .9 .2 .6 .8 .7, negatives .3 .4: pairs won: .9:2 .2:0 .6:2 .8:2 .7:2 = 8 of 10
  assert metrics.auc(LABELS, SCORES) == 0.8


def test_auc_counts_ties_half():
  assert metrics.auc([1, 0, 1, 0], [.5, .5, .7, .1]) == 0.875  # (0.5 + 1 + 1 + 1) / 4


def test_auc_one_class_is_nan():
  assert math.isnan(metrics.auc([1, 1], [.2, .3]))


def test_gauc_by_hand():
  # user 1: AUC 1/2, 3 impressions; user 2: AUC 1, 2 impressions; user 3 skipped
  assert math.isclose(metrics.gauc(LABELS, SCORES, USERS), (0.5 * 3 + 1 * 2) / 5)


def test_logloss_by_hand():
  expected = -(math.log(.9) + math.log(.7) + math.log(.2) + math.log(.6) + math.log(.6) +
               math.log(.8) + math.log(.7)) / 7
  assert math.isclose(metrics.logloss(LABELS, SCORES), expected, rel_tol=1e-12)


def test_gauc_by_bucket_splits_users_by_activity():
  activity = np.array([10, 10, 10, 500, 500, 900, 900])
  buckets = metrics.gauc_by_bucket(LABELS, SCORES, USERS, activity, num_buckets=2)
  assert [b["users"] for b in buckets] == [1, 2]
  assert buckets[0]["gauc"] == 0.5
  assert buckets[1]["gauc"] == 1.0  # user 3 one-class, so user 2 alone
