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


def per_head_scores(rows, queries):
  """sum_d rows[..., k, h, d] queries[..., h, d]: rows (..., K, H, d), queries (..., H, d)
  -> (..., K, H). One batched matrix product against the queries laid out block-diagonally,
  (..., H d, H): on one core about half the time of the elementwise product and sum over
  (C x K) gathered rows, whose (..., K, H, d) intermediates it never writes."""
  heads, width = rows.shape[-2], rows.shape[-1]
  flat = ops.reshape(rows, ops.shape(rows)[:-2] + (heads * width,))
  return ops.matmul(flat, _block_diagonal(queries))


def per_head_pooling(weights, rows):
  """sum_k weights[..., k, h] rows[..., k, h, v]: weights (..., K, H), rows (..., K, H, v)
  -> (..., H, v). One batched product of the weights, heads first, with every head of the
  rows, (..., H, H v), of which the diagonal blocks are kept (H times the multiply-adds
  needed, far faster on one core than the elementwise product and sum over K)."""
  heads, width = rows.shape[-2], rows.shape[-1]
  flat = ops.reshape(rows, ops.shape(rows)[:-2] + (heads * width,))
  every = ops.matmul(ops.swapaxes(weights, -1, -2), flat)  # (..., H, H v)
  every = ops.reshape(every, ops.shape(every)[:-1] + (heads, width))  # (..., H, H, v)
  return ops.sum(every * ops.eye(heads)[..., None], axis=-2)


def _block_diagonal(queries):
  """(..., H, d) -> (..., H d, H): column h holds head h's query in rows h d .. h d + d - 1."""
  heads, width = queries.shape[-2], queries.shape[-1]
  blocks = queries[..., None] * ops.eye(heads)[:, None, :]  # (..., H, d, H)
  return ops.reshape(blocks, ops.shape(queries)[:-2] + (heads * width, heads))
