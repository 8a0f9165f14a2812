"""Which item and behavior features a log carries: the one place a dataset declares them.

A behavior log always has the core fields of schema.CORE_FIELDS. A FeatureSpec adds:
  item_features   inherent (user-independent, cacheable) categorical item features, e.g. a
                  category, an author, a tag. Each becomes its own embedding next to the item
                  id's. Its vocabulary is built from the training data (ids seen in training
                  impressions and pre-cutoff behaviors; the rest are out-of-vocabulary,
                  counted and reported) or hashed (`hash_buckets` > 0: id mod buckets, no
                  vocabulary to store, collisions instead of OOV).
  behavior_flags  0/1 user actions on a behavior (tagged, liked, followed, ...): cross
                  features, like the completion group and the time features.
  primary         the item feature SIM-hard searches by and the user statistics call "category".
Missing item features and flags default to 0. The spec is saved beside the behavior log
(`twin-tf convert` writes it), with the examples, every training run and every export
(feature_spec.json), so every later step reads what the first one wrote.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from twin_tf.data import schema

FILE_NAME = "feature_spec.json"


@dataclasses.dataclass(frozen=True)
class ItemFeature:
  """One inherent categorical item feature; hash_buckets 0: vocabulary from the data."""

  name: str
  hash_buckets: int = 0


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """Attributes: name (of the dataset), item_features, behavior_flags, primary."""

  name: str
  item_features: tuple[ItemFeature, ...]
  behavior_flags: tuple[str, ...] = ()
  primary: str = ""

  def __post_init__(self):
    names = [f.name for f in self.item_features] + list(self.behavior_flags)
    reserved = set(schema.CORE_NAMES) | {schema.GROUP, schema.CLUSTER_SIZE, schema.COMPLETION}
    clashes = sorted(set(names) & reserved)
    if clashes or len(set(names)) != len(names):
      raise ValueError(f"feature spec {self.name!r}: names must be unique and not core "
                       f"fields; offending: {clashes or names}")
    if not self.item_features:
      raise ValueError(f"feature spec {self.name!r}: needs at least one item feature")
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"a feature spec needs a name, got {self.name!r}")
    for name in names:  # they become columns and the signatures' input names
      if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"feature spec {self.name!r}: feature name {name!r} must be a "
                         "non-empty identifier (letters, digits, _)")
    for feature in self.item_features:
      buckets = feature.hash_buckets
      if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 0:
        raise ValueError(f"feature spec {self.name!r}: item feature {feature.name!r}: "
                         f"hash_buckets must be an integer >= 0, got {buckets!r}")
    if not self.primary:
      object.__setattr__(self, "primary", self.item_features[0].name)
    if self.primary not in self.item_feature_names:
      raise ValueError(f"feature spec {self.name!r}: primary {self.primary!r} is not one of "
                       f"its item features {self.item_feature_names}")

  @property
  def item_feature_names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.item_features)

  @property
  def fields(self) -> tuple[schema.Field, ...]:
    """Every column of a behavior log under this spec."""
    return schema.CORE_FIELDS + tuple(
        schema.Field(n, np.int64, "categorical", inherent=True)
        for n in self.item_feature_names) + tuple(
        schema.Field(n, np.int64, "flag") for n in self.behavior_flags)

  @property
  def field_names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.fields)

  @property
  def optional(self) -> tuple[str, ...]:
    """Fields that default to 0 when a record lacks them."""
    return self.item_feature_names + self.behavior_flags

  @property
  def candidate_fields(self) -> tuple[str, ...]:
    """What describes an item: its id and inherent features."""
    return (schema.ITEM_ID,) + self.item_feature_names

  @property
  def sequence_fields(self) -> tuple[str, ...]:
    """What describes a behavior (or cluster) in a sequence, size aside."""
    return self.candidate_fields + (schema.GROUP,) + self.behavior_flags + (schema.TIMESTAMP,)

  @property
  def dtypes(self) -> dict[str, type]:
    """{field name: its dtype} of every column (schema.widened's argument)."""
    return {f.name: f.dtype for f in self.fields}

  def empty_columns(self, n: int = 0) -> dict[str, np.ndarray]:
    """Zero-filled columns for `n` behaviors, one array per field."""
    return {f.name: np.zeros(n, dtype=f.dtype) for f in self.fields}

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict) -> "FeatureSpec":
    """A spec from its JSON form; an unknown key (a typo such as "primray") is refused, not
    ignored."""
    _known_keys(values, ("name", "item_features", "behavior_flags", "primary"), "feature spec")
    for feature in values.get("item_features", ()):
      _known_keys(feature, ("name", "hash_buckets"), "item feature")
    return cls(name=values["name"],
               item_features=tuple(ItemFeature(**f) for f in values["item_features"]),
               behavior_flags=tuple(values.get("behavior_flags", ())),
               primary=values.get("primary", ""))

  def save(self, folder: str | pathlib.Path) -> None:
    (pathlib.Path(folder) / FILE_NAME).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _known_keys(values, known: tuple[str, ...], what: str) -> None:
  if not isinstance(values, dict):
    raise ValueError(f"{what}: expected a JSON object, got {values!r}")
  unknown = sorted(set(values) - set(known))
  if unknown:
    raise ValueError(f"{what} {values.get('name', '')!r}: unknown keys {unknown}; known: "
                     f"{list(known)}")


# MovieLens: first listed genre, 5-year release bucket (twin_tf.data.movielens), tagged.
MOVIELENS = FeatureSpec("movielens", (ItemFeature("category"), ItemFeature("year_bucket")),
                        ("tagged",))
# KuaiRand: author, first tag, music and upload type; liked, followed, commented
# (twin_tf.data.kuairand). Author and music ids run into the hundreds of thousands on the
# full log, so they are hashed.
KUAIRAND = FeatureSpec(
    "kuairand", (ItemFeature("tag"), ItemFeature("author_id", hash_buckets=100_003),
                 ItemFeature("music_id", hash_buckets=100_003), ItemFeature("upload_type")),
    ("is_like", "is_follow", "is_comment"))
PRESETS = {s.name: s for s in (MOVIELENS, KUAIRAND)}


def resolve(name_or_path: str | pathlib.Path) -> FeatureSpec:
  """A preset name, a feature_spec.json, or a folder holding one -> FeatureSpec."""
  if str(name_or_path) in PRESETS:
    return PRESETS[str(name_or_path)]
  path = pathlib.Path(name_or_path)
  if path.is_dir():
    path = path / FILE_NAME
  if not path.is_file():
    raise FileNotFoundError(f"feature spec {name_or_path!s}: neither a preset "
                            f"({', '.join(PRESETS)}) nor a {FILE_NAME} (or folder with one)")
  return FeatureSpec.from_json(json.loads(path.read_text()))


def load(folder: str | pathlib.Path, default: FeatureSpec = MOVIELENS) -> FeatureSpec:
  """The spec saved in `folder`; `default` for folders written before specs were saved."""
  path = pathlib.Path(folder) / FILE_NAME
  return resolve(path) if path.exists() else default


def for_log(log: str | pathlib.Path, features: str | None = None) -> FeatureSpec:
  """`features` (a preset name or a feature_spec.json) when given; else the feature_spec.json
  beside the log (file or glob); else MOVIELENS."""
  if features:
    return resolve(features)
  return load(pathlib.Path(str(log)).parent)
