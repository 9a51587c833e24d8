"""The layers, checked: a folder is one layer, and a module imports only from its own folder or from
folders of a lower layer.

Every `synergen_jax` import (including the ones inside functions) of every module of the package and
of configs/, launch/ and bench/ is read with `ast`, so a step back up a layer fails here with the file
and the import named. A folder has exactly one entry below: a module cannot sit in a folder and in a
different layer, so a folder can no longer span layers. The package root holds only command lines.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "synergen_jax"

# folder -> (rank, what it holds). A module may import its own folder and any folder of a lower
# rank; folders of the same rank do not know each other. "" is the package root.
LAYERS = {
    "kernels": (0, "the attention entry point and the Pallas flash kernels"),
    "core": (1, "config declarations, the batch contract, hardware facts, errors, --config"),
    "parallel": (2, "mesh, sharding rules, distributed start, failure handling"),
    "configs": (2, "experiment configs: get_config(arg)"),
    "model": (3, "the SynerGen-VL network and its losses"),
    "data": (3, "raw data -> token examples, and the Grain pipeline over prepared data"),
    "vq": (4, "the image tokenizer: network, training, pixels <-> codes"),
    "prepare": (5, "raw inputs -> prepared ArrayRecord parts; the data cache"),
    "train": (6, "the trainer"),
    "infer": (7, "KV-cached decoding, loading a workdir, scoring, batch jobs"),
    "eval": (8, "benchmark metrics, the class judge, the evaluation report, suites"),
    "convert": (9, "weights in and out: HF LLMs, released image tokenizers"),
    "aot": (9, "the train step compiled ahead of time for TPU slices and GPU hosts"),
    "serving": (9, "the OpenAI-compatible HTTP server: batching, routes, the playground page"),
    "planning": (10, "fit and cost planner: memory and step-time models, targets, prices"),
    "": (11, "command lines: python -m synergen_jax.<name>"),
    "launch": (12, "launch scripts and the sweep driver"),
    "bench": (12, "benchmarks that print tables"),
}


def folder(name: str) -> str:
  """The LAYERS key of a module named by its dotted path below synergen_jax."""
  parts = name.split(".")
  return parts[0] if len(parts) > 1 else ""


def package_modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    yield folder(name.removesuffix(".__init__").removesuffix(".__main__")), path


def outside_modules():
  for top in ("configs", "launch", "bench"):
    for path in sorted((REPO / top).rglob("*.py")):
      yield top, path


def imports(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("synergen_jax"):
      base = node.module.removeprefix("synergen_jax").lstrip(".")
      for alias in node.names:   # `from synergen_jax.core import cli` imports core.cli
        yield ".".join(filter(None, [base, alias.name])), node.lineno
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("synergen_jax."):
          yield alias.name.removeprefix("synergen_jax."), node.lineno


def target_folder(target: str) -> str:
  """The folder an imported name lives in: `core.config` -> core, `demo` -> the root, `core` -> core."""
  first = target.split(".")[0]
  if (PACKAGE / first).is_dir():
    return first
  assert (PACKAGE / f"{first}.py").is_file(), f"synergen_jax.{target} does not exist"
  return ""


@pytest.mark.parametrize("own,path", [*package_modules(), *outside_modules()],
                         ids=lambda x: str(x.relative_to(REPO)) if isinstance(x, pathlib.Path) else x)
def test_imports_go_down_the_layers(own, path):
  if path.name == "__init__.py" and path.is_relative_to(PACKAGE):   # package docstrings only
    assert not list(imports(path)), f"{path} imports; keep package __init__ files to a docstring"
    return
  assert own in LAYERS, f"{path}: folder {own!r} has no layer in tests/test_layers.py LAYERS"
  rank = LAYERS[own][0]
  for target, line in imports(path):
    theirs = target_folder(target)
    assert theirs in LAYERS, f"{path}:{line} imports synergen_jax.{target}, in a folder with no layer"
    ok = theirs == own or LAYERS[theirs][0] < rank
    assert ok, (f"{path}:{line}: {own or 'the package root'} (layer {rank}) imports {target} "
                f"({theirs or 'the package root'}, layer {LAYERS[theirs][0]}): a step back up or "
                f"sideways")


def test_every_folder_has_a_layer():
  """A new package folder must be placed in the drawing before anything is checked against it."""
  folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
  assert folders <= set(LAYERS), f"folders without a layer: {sorted(folders - set(LAYERS))}"
