"""The package's layers: a module imports only from its own group or from groups below it.

This is README's layer drawing, checked: every `synergen_jax` import (including the ones inside
functions) of every module is read with `ast`, so a step back up a layer fails here with the file
and the import named.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "synergen_jax"

# (rank, group): lower ranks are below; a group may import itself and any group of a lower rank.
LAYERS = {
    "kernels": (0, "kernels"),
    "config": (1, "facts"), "batch": (1, "facts"), "hardware": (1, "facts"),
    "cli": (2, "cli"),
    "parallel": (2, "parallel"),
    "model": (3, "model"),
    "data.errors": (3, "raw data"), "data.images": (3, "raw data"), "data.sources": (3, "raw data"),
    "data.layout": (3, "raw data"), "data.records": (3, "raw data"),
    "data.tokenizers": (3, "raw data"), "data.synthetic": (3, "raw data"),
    "data.documents": (3, "raw data"), "data.formats": (3, "raw data"), "data.paths": (3, "raw data"),
    "data.decoding": (3, "raw data"), "data.inputs": (3, "raw data"), "data.parts": (3, "raw data"),
    "data.budgets": (3, "raw data"),
    "vq": (4, "image tokenizer"),
    "data.writer": (5, "prepare"),            # the writer and the reader do not know each other:
    "data.pipeline": (5, "pipeline"),         # they share data/records.py
    "data.mixture": (5, "pipeline"),
    "data.cache": (6, "cache"),
    "train": (7, "train"),
    "eval": (4, "metrics"),                   # benchmark scores; eval.suites runs the model
    "infer": (8, "infer"),
    "convert": (9, "tools"), "aot": (9, "tools"), "eval.suites": (9, "tools"),
    # command lines
    "train_vq": (10, "commands"), "prepare": (10, "commands"), "sample": (10, "commands"),
    "score": (10, "commands"), "evaluate": (10, "commands"), "demo": (10, "commands"),
    "summary": (10, "commands"),
}


def layer(module: str):
  """The LAYERS entry of a dotted module name below synergen_jax (longest prefix wins)."""
  parts = module.split(".")
  for n in range(len(parts), 0, -1):
    if ".".join(parts[:n]) in LAYERS:
      return LAYERS[".".join(parts[:n])]
  return None


def modules():
  for path in sorted(ROOT.rglob("*.py")):
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    yield name.removesuffix(".__init__").removesuffix(".__main__"), path


def imports(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synergen_jax"):
      base = node.module.removeprefix("synergen_jax").lstrip(".")
      for alias in node.names:   # `from synergen_jax.data import layout` imports data.layout
        yield ".".join(filter(None, [base, alias.name])), node.lineno
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("synergen_jax."):
          yield alias.name.removeprefix("synergen_jax."), node.lineno


@pytest.mark.parametrize("name,path", list(modules()), ids=lambda x: str(x))
def test_imports_go_down_the_layers(name, path):
  if path.name == "__init__.py":   # package docstrings: they import nothing
    assert not list(imports(path)), f"{path} imports; keep package __init__ files empty"
    return
  own = layer(name)
  assert own is not None, f"{path}: module {name} has no layer in tests/test_layers.py LAYERS"
  for target, line in imports(path):
    theirs = layer(target)
    if theirs is None:   # `from synergen_jax import batch as batch_lib` style names a module
      theirs = layer(target.split(".")[0])
    assert theirs is not None, f"{path}:{line} imports unknown synergen_jax.{target}"
    ok = theirs[1] == own[1] or theirs[0] < own[0]
    assert ok, (f"{path}:{line}: {name} ({own[1]}, layer {own[0]}) imports {target} "
                f"({theirs[1]}, layer {theirs[0]}): a step back up")
