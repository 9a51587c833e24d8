"""Every error the framework raises on purpose, in one place below all layers.

How input can be wrong: a config value (stop before any device work, naming the key and the fix), one
record (skip it and count it), the whole input (stop), or a weights file that does not match what it
should hold (stop, naming the file and the tensors).
"""


class ConfigError(ValueError):
  """An inconsistent or unknown config value; the message names the key and how to fix it."""


class BadRecord(ValueError):
  """One unusable record; `reason` is the key it is counted under in meta.json (`skipped`)."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


class DataError(ValueError):
  """Input that cannot be used at all (missing dataset, shard that contradicts the config, ...)."""


class CheckpointError(ValueError):
  """A missing, corrupt or mismatched checkpoint file; the message names the file and tensor."""
