"""The two ways data can be wrong: one record (skip it and count it) or the whole input (stop)."""


class BadRecord(ValueError):
  """One unusable record; `reason` is the key it is counted under in meta.json (`skipped`)."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


class DataError(ValueError):
  """Input that cannot be used at all (missing dataset, shard that contradicts the config, ...)."""
