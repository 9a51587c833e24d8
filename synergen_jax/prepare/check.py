"""`prepare --check`: what each component of a recipe expects on disk and what is there, before any
encoding.

For each component (the config's `data.components`, each loaded with `component=NAME`; else the
config's own data) it reports the format and file pattern it expects, the input files found, and a
sample of its records read and decoded exactly as prepare would (image fitted to the tokenizer's
size, text kept), without the image tokenizer: usable examples and broken records by reason. A
component with no files, or whose sample is all broken, fails the check, so a recipe's gaps are
named in minutes instead of after hours of encoding.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools

from synergen_jax.core.errors import ConfigError, DataError
from synergen_jax.data.decoding import FitSettings, decode_stream
from synergen_jax.data.documents import Skipped
from synergen_jax.data.inputs import open_inputs


@dataclasses.dataclass
class ComponentCheck:
  name: str
  format: str
  expects: str                  # the file pattern, or the source's name
  files: int = 0                # input files (or record runs of a random-access source)
  first_files: tuple = ()
  sampled: int = 0              # records read
  usable: int = 0               # records that decode into an example
  broken: dict = dataclasses.field(default_factory=dict)   # reason -> count
  error: str | None = None      # why nothing could be read

  @property
  def ok(self) -> bool:
    return self.error is None and self.files > 0 and self.usable > 0

  def line(self) -> str:
    head = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.format} {self.expects}"
    if self.error:
      return f"{head}\n       {self.error}"
    files = f"{self.files} files" + (f" ({', '.join(self.first_files)}, ...)" if self.files else "")
    broken = ", ".join(f"{k} {v}" for k, v in sorted(self.broken.items())) or "none"
    return (f"{head}\n       found {files}; sampled {self.sampled} records: {self.usable} usable, "
            f"broken: {broken}")


def check_component(name: str, config, image_size: int, records: int = 200) -> ComponentCheck:
  """Lists one component's inputs and decodes its first `records` records (no image tokenizer)."""
  d = config.data
  result = ComponentCheck(name, d.name, d.path or d.name)
  try:
    inputs = open_inputs(d)
  except (DataError, ConfigError, OSError) as e:
    result.error = str(e)
    return result
  shards = [s for s in inputs.shards if s.split == "train"]
  result.files = len(shards)
  result.first_files = tuple(s.name for s in shards[:3])
  settings = FitSettings.from_config(config, image_size, inputs.background)
  keyed = ((f"{s.name}/{j}", item) for s in shards for j, item in enumerate(s.read()))
  broken = collections.Counter()
  try:
    for item in decode_stream(itertools.islice(keyed, records), settings):
      result.sampled += 1
      if isinstance(item, Skipped):
        broken[item.reason] += 1
      else:
        result.usable += 1
        for reason, n in getattr(item, "dropped", {}).items():   # a document's images that failed
          broken[f"image {reason}"] += n
  except (DataError, OSError) as e:
    result.error = f"reading stopped after {result.sampled} records: {e}"
  result.broken = dict(broken)
  return result


def check_recipe(spec: str, config, overrides: dict, image_size: int, records: int = 200,
                 log=print) -> list[ComponentCheck]:
  """Every component of `config.data.components` (each loaded as `spec` + `component=NAME`, with the
  command line's overrides), else the config's own data; one report line each."""
  from synergen_jax.core import cli
  from synergen_jax.core.config import load_config

  path, _, arg = spec.partition(":")
  given = dict(item.split("=", 1) for item in arg.split(",") if "=" in item)
  names = [given["component"]] if given.get("component") else list(config.data.components)
  results = []
  if not names:
    results.append(check_component(config.data.name, config, image_size, records))
  for name in names:
    component = cli.apply_overrides(load_config(cli.with_args(spec, component=name)), overrides)
    results.append(check_component(name, component, image_size, records))
  for r in results:
    log(r.line())
  return results
