"""TWIN-V2 and its baselines as one configurable Keras model over one data path.

  TwinV2    GSU top-100 + ESU over the user's clusters, alpha' with + ln n.
  Twin      the same GSU/ESU over raw behaviors before the cutoff (n = 1, no clustering).
  SimHard   behaviors of the target's category (the 100 most recent), then the ESU.
  DIN       DIN attention over the 50 most recent behaviors only (their inherent and cross
            features, projected to the target's size for the activation unit).
Ablations: TwinV2-no-ln-n (use_log_size False) and TwinV2-uniform (uniformly sampled raw
behaviors instead of clusters). Every model also has the short-term module (DIN's is its
activation unit) and the same top MLP over [long-term, short-term, target, time context,
standardized dense "other features" (features.DENSE_FEATURES)] -> ReLU -> ReLU -> sigmoid.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.model import features
from twin_tf.model.layers import (
  ClusterAwareTargetAttention,
  CrossFeatureEmbedding,
  DenseNormalization,
  DinAttention,
  Esu,
  GsuTopK,
  ItemEmbedding,
  ShortTermAttention,
  gather_selected,
)
from twin_tf.model.layers.gsu import reaching
from twin_tf.model.layers.sequence_ops import per_head_scores

LONG_TERM = ("gsu", "category", "none")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Attributes:
    name: label of the model in reports.
    long_term: "gsu" (TWIN / TWIN-V2), "category" (SIM-hard search), "none" (DIN).
    long_term_source: what the long-term module reads: "clusters", "raw" or "uniform", and
      "none" exactly when long_term is "none" (twin_tf.training.input_pipeline.LONG_SOURCES).
    use_log_size: the + ln n term of alpha'.
    normalized_attention: the attention's target term live from the start (unit-RMS K_h and
      q into W_h / W_q, kernels at variance 1 / D_h, a learnt temperature per head;
      ClusterAwareTargetAttention's `normalized`). False: the paper's plain projections,
      whose target term stays near 1e-4 against ln n (docs/live_attention.md).
    gsu_top_k, gsu_merge: K and the head merge ("sum" or "round_robin").
    item_l2: L2 penalty on the item-id embedding table (training only).
    pretrained_dim: size of the frozen pretrained item vectors appended to the inherent
      features (ItemEmbedding's pretrained_dim; the trainer fills them); 0: none.
    short_term: "attention" (multi-head target attention) or "din" (DIN's activation unit).
  """

  name: str = "TwinV2"
  long_term: str = "gsu"
  long_term_source: str = "clusters"
  use_log_size: bool = True
  normalized_attention: bool = True
  gsu_top_k: int = 100
  gsu_merge: str = "sum"
  short_term: str = "attention"
  num_heads: int = 4
  key_dim: int = 16
  value_dim: int = 16
  interest_dim: int = 64
  item_dim: int = 32
  feature_dim: int = 8
  cross_dim: int = 8
  hidden_units: tuple = (200, 80)
  item_l2: float = 0.0
  pretrained_dim: int = 0

  def __post_init__(self):
    if self.long_term not in LONG_TERM:
      raise ValueError(f"long_term must be one of {LONG_TERM}, got {self.long_term!r}")
    if (self.long_term == "none") != (self.long_term_source == "none"):
      raise ValueError(f"long_term {self.long_term!r} with long_term_source "
                       f"{self.long_term_source!r}: a model without a long-term module reads "
                       "source \"none\", and only such a model does")


PRESETS = {
    "TwinV2": ModelConfig(),
    "Twin": ModelConfig(name="Twin", long_term_source="raw", use_log_size=False),
    "SimHard": ModelConfig(name="SimHard", long_term="category", long_term_source="raw",
                           use_log_size=False),
    "DIN": ModelConfig(name="DIN", long_term="none", long_term_source="none", short_term="din"),
    "TwinV2-no-ln-n": ModelConfig(name="TwinV2-no-ln-n", use_log_size=False),
    "TwinV2-uniform": ModelConfig(name="TwinV2-uniform", long_term_source="uniform",
                                  use_log_size=False),
}


@keras.saving.register_keras_serializable(package="twin_tf")
class CtrModel(keras.Model):
  """CTR model over a long-term sequence, the recent behaviors and the target.

  Args:
    config: the architecture.
    spec: the item features and flags of the data (twin_tf.data.feature_spec).
    vocab_sizes: {field: vocabulary size} for spec.candidate_fields (Vocabularies.sizes()).

  Call:
    inputs: dict of twin_tf.model.features model inputs. Target features (B,) score one candidate
      per row -> (B,); target features (B, C) score C candidates of one user per row against
      the user's sequences, computed once -> (B, C). With (B, C) targets, inputs may also
      hold `long_chosen` (B, C, K) int32: each candidate's clusters already chosen (by ScaNN
      or any retriever) as positions into long_* (-1: none), which the ESU alone scores;
      with it, `long_keys` (B, U, H, d_k) and `long_value_heads` (B, U, H, value_dim), the
      key cache's projections of the long rows' items, stand in for their item features.
    returns: click probabilities.
  """

  def __init__(self, config: ModelConfig, spec: FeatureSpec, vocab_sizes: dict, **kwargs):
    super().__init__(name=kwargs.pop("name", config.name.replace("-", "_")), **kwargs)
    self.config, self.spec = config, spec
    self.vocab_sizes = {f: int(vocab_sizes[f]) for f in spec.candidate_fields}
    self.item_embedding = ItemEmbedding(self.vocab_sizes, config.item_dim, config.feature_dim,
                                        config.item_l2, config.pretrained_dim)
    self.cross_embedding = CrossFeatureEmbedding(features.cross_vocab(spec), config.cross_dim)
    self.hour = keras.layers.Embedding(features.TIME_CROSS_VOCAB["hour"], config.feature_dim)
    self.weekday = keras.layers.Embedding(features.TIME_CROSS_VOCAB["weekday"],
                                          config.feature_dim)
    if config.long_term != "none":
      self.attention = ClusterAwareTargetAttention(config.num_heads, config.key_dim,
                                                   config.use_log_size,
                                                   config.normalized_attention)
      self.gsu = GsuTopK(config.gsu_top_k, config.gsu_merge)
      self.esu = Esu(config.value_dim, config.interest_dim)
    if config.short_term == "din":
      self.short_term = DinAttention()
      self.din_keys = keras.layers.Dense(self.item_embedding.output_dim, name="din_keys")
    else:
      self.short_term = ShortTermAttention(config.num_heads, config.key_dim, config.value_dim,
                                           config.interest_dim)
    self.dense_normalization = DenseNormalization(name="dense_normalization")
    self.top = [keras.layers.Dense(u, activation="relu") for u in config.hidden_units]
    self.top.append(keras.layers.Dense(1, activation="sigmoid"))

  def build(self, input_shape):
    """Every sublayer builds on the first call, from the shapes it is called with."""
    self.built = True

  def embed_items(self, inputs, prefix):
    """Inherent embeddings (..., D_h) of the items `<prefix>_<f>` of inputs."""
    return self.item_embedding([inputs[f"{prefix}_{f}"] for f in self.spec.candidate_fields])

  def _sequence(self, inputs, prefix):
    """(inherent (..., L, D_h), cross embeddings (..., L, J, 8), values K (..., L, D_h + 8J))
    of sequences (..., L)."""
    inherent = self.embed_items(inputs, prefix)
    cross = self.cross_embedding(inputs[f"{prefix}_cross"])
    flat = ops.reshape(cross, ops.shape(cross)[:-2] + (cross.shape[-2] * cross.shape[-1],))
    return inherent, cross, ops.concatenate([inherent, flat], axis=-1)

  def call(self, inputs):
    single = len(inputs["target_item_id"].shape) == 1
    target = {k: (inputs[k][:, None] if single else inputs[k])
              for k in features.target_keys(self.spec)}
    query = self.embed_items(target, "target")  # (B, C, D_h)
    dense = inputs[features.DENSE]
    dense = self.dense_normalization(dense[:, None, :] if single else dense)  # (B, C, D)
    parts = [query, self.hour(target["target_hour"]), self.weekday(target["target_weekday"]),
             dense]

    if self.config.long_term != "none":
      parts.append(self.long_term_interest(inputs, query,
                                           target[f"target_{self.spec.primary}"]))

    _, _, short_values = self._sequence(inputs, "short")
    short_mask = inputs["short_mask"]
    if self.config.short_term == "din":  # the same behavior features as the other presets
      parts.append(self.short_term(query, self.din_keys(short_values), short_mask))
    else:
      parts.append(self.short_term(query, short_values, short_mask))

    x = ops.concatenate(parts, axis=-1)
    for layer in self.top:
      x = layer(x)
    x = x[..., 0]  # (B, C)
    return x[:, 0] if single else x

  def long_term_interest(self, inputs, query, target_category):
    """GSU + ESU (or SIM-hard search + ESU over target_category, the spec's primary item
    feature): (B, C, interest_dim). With inputs["long_chosen"] (B, C, K), positions already
    chosen per candidate (-1: none), the ESU alone runs over them (_esu_of_chosen): each long
    position is featurized and projected once however many candidates chose it."""
    chosen = inputs.get(features.CHOSEN)
    if chosen is not None and features.CACHED_KEYS in inputs:
      return self._esu_of_cached(inputs, query, chosen)
    if chosen is None:
      inputs = _pad_long_to(inputs, self.config.gsu_top_k, self.spec)
    inherent, cross, values = self._sequence(inputs, "long")
    mask = inputs["long_mask"]
    attention = self.attention
    if not attention.built:  # its parts are called one by one; SIM-hard never calls the keys
      attention.build(inherent.shape, cross.shape, target_inherent_shape=query.shape)
    if (chosen is None and self.config.long_term == "gsu" and
        self.config.gsu_merge == "round_robin"):
      alpha = attention(inherent, cross, inputs["long_size"], mask, query)  # (B, C, L, H)
      indices, valid = self.gsu(alpha, mask)
      selected_alpha = ops.take_along_axis(alpha, indices[..., None], axis=2)  # (B, C, K, H)
      return self.esu(ops.transpose(selected_alpha, (0, 1, 3, 2)),
                      gather_selected(values, indices), valid)
    queries = attention.queries(query)  # (B, C, H, d_k)
    if chosen is not None:
      return self._esu_of_chosen(inherent, cross, values, inputs["long_size"], queries, chosen)
    # 1 / RMS of each row's K_h, (B, L): computed once for the GSU and the ESU
    key_scale = attention.key_scale(inherent) if attention.normalized else None
    if self.config.long_term == "gsu":
      indices, valid = self.gsu.select_by_product(
          *self._gsu_factors(inputs, inherent, cross, queries, key_scale), mask)
    else:  # SIM-hard: same category as the target, the most recent first
      category = inputs[f"long_{self.spec.primary}"]
      same = ops.logical_and(mask[:, None, :],
                             category[:, None, :] == target_category[..., None])
      recency = ops.cast(ops.arange(ops.shape(mask)[1]), "float32")
      _, indices = ops.top_k(ops.where(same, recency, -1.0), self.config.gsu_top_k)
      valid = ops.take_along_axis(same, indices, axis=2)
      indices = ops.cast(indices, "int32")
    if key_scale is not None:
      key_scale = gather_selected(key_scale, indices)  # (B, C, K)
    return self._esu_over(gather_selected(values, indices), key_scale, queries,
                          gather_selected(inputs["long_size"], indices), valid)

  def _esu_of_chosen(self, inherent, cross, values, size, queries, chosen):
    """The ESU over rows chosen per candidate, chosen (B, C, K) (-1: none), of long rows
    inherent (B, U, D_h), cross (B, U, J, dim), values (B, U, D), size (B, U) that several
    candidates may share: each row's keys, per-head bias and value heads are computed once,
    by plain matrix products, then gathered (_esu_of_rows). The same alpha' and pooling as
    the GSU path's _esu_over (up to float rounding), without its (B, C)-batched products of
    small matrices. -> (B, C, interest_dim)."""
    if not self.esu.built:
      self.esu.build((None, None, self.config.num_heads, None), values.shape)
    return self._esu_of_rows(self.attention.item_keys(inherent), self.attention.bias(cross, size),
                             self.esu.value_heads(values), queries, chosen)

  def _esu_of_cached(self, inputs, query, chosen):
    """_esu_of_chosen with the rows' inherent projections given (the key cache's): inputs
    [CACHED_KEYS] (B, U, H, d_k) (attention.item_keys of the rows' items) and
    [CACHED_VALUE_HEADS] (B, U, H, value_dim) (esu.value_heads of their inherent features);
    only the cross features (their ages at the request's time) are featurized here.
    query (B, C, D_h) -> (B, C, interest_dim)."""
    cross = self.cross_embedding(inputs["long_cross"])
    flat = ops.reshape(cross, ops.shape(cross)[:-2] + (cross.shape[-2] * cross.shape[-1],))
    heads = inputs[features.CACHED_VALUE_HEADS] + self.esu.value_heads(
        flat, first=self.item_embedding.output_dim)
    return self._esu_of_rows(inputs[features.CACHED_KEYS],
                             self.attention.bias(cross, inputs["long_size"]), heads,
                             self.attention.queries(query), chosen)

  def _esu_of_rows(self, keys, bias, heads, queries, chosen):
    """The ESU from per-row keys (B, U, H, d_k), bias (B, U, H) and value heads
    (B, U, H, value_dim), queries (B, C, H, d_k), chosen (B, C, K) (-1: none): the rows are
    gathered; the scores and the pooling are batched products per candidate (per_head_scores,
    per_head_pooling). -> (B, C, interest_dim)."""
    rows = ops.maximum(chosen, 0)
    alpha = (per_head_scores(gather_selected(keys, rows), queries)
             + gather_selected(bias, rows))  # (B, C, K, H)
    return self.esu.pooled_heads(alpha, gather_selected(heads, rows), chosen >= 0)

  def _esu_over(self, values, key_scale, queries, size, valid):
    """The ESU over chosen rows: values (B, C, K, D), key_scale (B, C, K) (their 1 / RMS of
    K_h when the attention is normalized, else None), queries (B, C, H, d_k), size and valid
    (B, C, K) -> (B, C, interest_dim)."""
    scores = self.attention.scores_at(values, queries, size, key_scale)  # (B, C, H, K)
    return self.esu(scores, values, valid)

  def _gsu_factors(self, inputs, inherent, cross, queries, key_scale=None):
    """(positions (B, L, D + 1), queries (B, C, D + 1)) whose product the GSU ranks;
    key_scale (B, L): the attention's key_scale(inherent) when the caller has it."""
    bias = self.attention.summed_bias(cross, inputs["long_size"])  # (B, L)
    return self.attention.summed_factors(inherent, queries, bias, inputs["long_mask"],
                                         key_scale)

  def gsu_factors(self, inputs):
    """(positions (B, L', D + 1), queries (B, C, D + 1)) of inputs as call() ((B,) targets
    count as C = 1; L' >= K: padded to the top-k): the GSU's summed alpha' of every position
    for every candidate is their product; the last column of positions is the per-position
    term (cross bias + H ln n, MASK_VALUE at padding), the rest give the target term.
    "gsu" models."""
    inputs = _pad_long_to(inputs, self.config.gsu_top_k, self.spec)
    inherent, cross, _ = self._sequence(inputs, "long")
    target = self.embed_items(inputs, "target")
    if len(target.shape) == 2:
      target = target[:, None, :]
    return self._gsu_factors(inputs, inherent, cross, self.attention.queries(target))

  def gsu_reach(self, inputs):
    """(B,) long-term positions that can reach some candidate's top K by the GSU's bound
    (gsu.reaching): what it multiplies and ranks when it prunes. inputs as call(), (B, C)
    targets; "gsu" models."""
    _, can_reach = reaching(*self.gsu_factors(inputs), self.config.gsu_top_k)
    return ops.sum(ops.cast(can_reach, "int32"), axis=-1)

  def get_config(self):
    return {"config": dataclasses.asdict(self.config), "spec": self.spec.to_json(),
            "vocab_sizes": self.vocab_sizes}

  @classmethod
  def from_config(cls, config):
    values = dict(config["config"])
    values["hidden_units"] = tuple(values["hidden_units"])
    return cls(ModelConfig(**values), FeatureSpec.from_json(config["spec"]),
               config["vocab_sizes"])


def _pad_long_to(inputs, k: int, spec: FeatureSpec):
  """Pads the long sequence with padding positions so that L >= k (also when L is only known
  at run time, as in TensorFlow's traced graphs): top-k then always takes k positions."""
  length = inputs["long_mask"].shape[1]
  if length is not None and length >= k:
    return inputs
  if length is None:  # pad at run time only as far as needed
    extra = ops.maximum(k - ops.shape(inputs["long_mask"])[1], 0)
  else:
    extra = k - length
  padded = dict(inputs)
  for key in features.sequence_keys(spec, "long"):
    value = inputs[key]
    widths = [(0, 0), (0, extra)] + [(0, 0)] * (len(value.shape) - 2)
    padded[key] = ops.pad(value, widths)
  return padded


def build_model(config: ModelConfig | str, spec: FeatureSpec, vocab_sizes: dict) -> CtrModel:
  """A model from a config or a preset name (PRESETS), for data of `spec` with
  vocabularies of `vocab_sizes` ({field: size})."""
  if isinstance(config, str):
    if config not in PRESETS:
      raise ValueError(f"unknown model {config!r}; presets: {sorted(PRESETS)}")
    config = PRESETS[config]
  return CtrModel(config, spec, vocab_sizes)
