"""Training across several processes (hosts) with JAX's distributed runtime.

Every process runs the same `twin-tf train` with its own --process-id; process 0's host:port
is the coordinator. Each builds the same global batches (the same files, order and seeds)
and keeps its own equal slice of each (StreamingInput.dataset(shard=...)); Keras'
DataParallel joins the slices into the global batch and all-reduces the gradients, so a
step is the one-process step on that batch. CPU collectives go through gloo.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Processes:
  """One process's place in a multi-process run.

  Attributes:
    coordinator: host:port of process 0, reachable from every process.
    count: the number of processes.
    index: this process's id, 0 .. count - 1.
  """

  coordinator: str
  count: int
  index: int

  def __post_init__(self):
    host, _, port = self.coordinator.rpartition(":")
    if not host or not port.isdigit():
      raise ValueError(f"coordinator {self.coordinator!r}: expected host:port of process 0")
    if self.count < 1:
      raise ValueError(f"num_processes {self.count}: expected at least 1")
    if not 0 <= self.index < self.count:
      raise ValueError(f"process_id {self.index}: expected 0 .. {self.count - 1}")

  def initialize(self) -> None:
    """Joins the distributed runtime; call before anything runs on a JAX device."""
    import keras  # pylint: disable=import-outside-toplevel
    if keras.backend.backend() != "jax":
      raise ValueError("training in several processes needs KERAS_BACKEND=jax (or --backend "
                       "jax): Keras' distribution API")
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts' all-reduce
    keras.distribution.initialize(self.coordinator, self.count, self.index)


def current() -> tuple[int, int]:
  """(this process's index, the number of processes); (0, 1) outside a distributed run."""
  import keras  # pylint: disable=import-outside-toplevel
  if keras.backend.backend() != "jax":
    return 0, 1
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index(), jax.process_count()
