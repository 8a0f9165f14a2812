"""Vocabularies of the item id and item features: padding, OOV, hashing, save and load."""

import numpy as np

from twin_tf.data.feature_spec import KUAIRAND
from twin_tf.model.vocabulary import OOV, HashedVocabulary, Vocabularies, Vocabulary


def test_data_vocabulary_maps_known_ids_from_2_and_the_rest_to_oov():
  vocabulary = Vocabulary(np.array([40, 7, 7, 1_000_000_000_000]))
  assert len(vocabulary) == 5
  np.testing.assert_array_equal(vocabulary.lookup([7, 40, 1_000_000_000_000, 8, 0]),
                                [2, 3, 4, OOV, OOV])
  assert np.all(Vocabulary(np.zeros(0)).lookup([1, 2]) == OOV)


def test_hashed_vocabulary_is_id_mod_buckets_plus_2():
  vocabulary = HashedVocabulary(7)
  assert len(vocabulary) == 9
  np.testing.assert_array_equal(vocabulary.lookup([0, 6, 7, 3_000_001]),
                                [2, 8, 2, 3_000_001 % 7 + 2])


def test_vocabularies_follow_the_spec_and_round_trip(tmp_path):
  values = {f: np.arange(5) * 3 for f in KUAIRAND.candidate_fields}
  vocabularies = Vocabularies.from_values(KUAIRAND, values)
  assert list(vocabularies) == list(KUAIRAND.candidate_fields)
  assert vocabularies.sizes()["author_id"] == 100_005  # hashed: buckets + 2
  assert vocabularies.sizes()["tag"] == 7
  assert vocabularies.oov_counts(values) == {"item_id": 0, "tag": 0, "upload_type": 0}
  assert vocabularies.oov_counts({**values, "tag": np.array([0, 1, 2, 3])})["tag"] == 2
  indexed = vocabularies.indexed({**values, "timestamp": np.arange(5)})
  np.testing.assert_array_equal(indexed["timestamp"], np.arange(5))  # not a vocabulary's
  np.testing.assert_array_equal(indexed["tag"], vocabularies["tag"].lookup(values["tag"]))
  vocabularies.save(tmp_path)
  loaded = Vocabularies.load(tmp_path)
  assert loaded.spec == KUAIRAND and loaded.sizes() == vocabularies.sizes()
  probe = np.array([0, 3, 4, 12, 99])
  for field in KUAIRAND.candidate_fields:
    np.testing.assert_array_equal(loaded[field].lookup(probe), vocabularies[field].lookup(probe))
