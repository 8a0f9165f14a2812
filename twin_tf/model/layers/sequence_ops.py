"""What every sequence layer shares: the score of padding, the row and per-candidate gathers
and the per-head projection."""

import keras
from keras import ops

# Score of padding: far below any real score, so padding never wins a top-k and its softmax
# weight underflows to exactly 0 (a real score would need to be ~1e9 to compete).
MASK_VALUE = -1e9


def gather_selected(values, indices):
  """values (B, L, ...) at per-candidate positions indices (B, C, K) -> (B, C, K, ...).

  One flat gather over (B * L, ...) rows: cheaper than a broadcast take_along_axis.
  """
  shape = ops.shape(values)
  flat = ops.reshape(values, (-1,) + tuple(values.shape[2:]))  # (B * L, ...)
  offsets = ops.cast(ops.arange(shape[0]), "int32") * ops.cast(shape[1], "int32")
  return take_rows(flat, ops.cast(indices, "int32") + offsets[:, None, None])


def take_rows(table, indices):
  """table[indices] along the first axis, for indices known to lie in [0, len(table)).

  keras.ops.take also maps negative indices, which on TensorFlow is a compare and a select
  over every index (about 0.5 ms of a request over 10^4 clusters); there this is one gather.
  """
  if keras.backend.backend() == "tensorflow":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.gather(table, indices)
  return ops.take(table, indices, axis=0)


def project_per_head(x, kernel):
  """(..., D) x (D, H, d) kernel -> (..., H, d), as one plain matrix product (its gradient
  stays (..., D)-sized, which an ellipsis einsum's does not on TensorFlow, and TensorFlow's
  CPU einsums were several times slower)."""
  flat = ops.matmul(x, ops.reshape(kernel, (kernel.shape[0], -1)))
  return ops.reshape(flat, ops.shape(x)[:-1] + tuple(kernel.shape[1:]))
