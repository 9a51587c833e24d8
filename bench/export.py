"""The full export's cost: time and peak memory of writing the paper config's weights, and tokens/s
of the exported PyTorch model against our decoding on CPU.

  python -m bench.export [--layers 2] [--dtype bfloat16] [--tokens 32]

Memory: random parameters of configs/synergen_vl_2b.py's shapes (every tensor the paper's size:
vocabulary 92,544 x 2048, fold 2x8, the 4-layer unfold head; `--layers` of the 24 LLM layers, so it
fits this machine) are made in a fresh process, as the export's restore leaves them in host memory
(float32); then the export's writer (full_export.model_tensors -> safetensors shards, --dtype) runs
and the process's peak RSS is compared with the model's bytes plus its largest tensor.

Speed: configs/demo.py's model with random weights (seed 0; the same numbers for both), one prompt
of 16 text ids, `--tokens` new tokens greedily: our Decoder.generate_text (jitted, the compile timed
apart) against the exported PyTorch model's generate() (float32, KV cache), both on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("layers", 2, "LLM layers of the paper config to write (its shapes otherwise)")
flags.DEFINE_string("dtype", "bfloat16", "tensor dtype on disk")
flags.DEFINE_integer("tokens", 32, "new tokens for the speed comparison")

MEMORY_CHILD = r"""
import json, resource, sys, tempfile, time
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from synergen_jax.core import batch as batch_lib, storage
from synergen_jax.core.config import load_config, validate_config
from synergen_jax.convert import full_export
from synergen_jax.convert.exporter import _write_shards
from synergen_jax.model.synergen_vl import SynerGenVL
config = load_config("configs/synergen_vl_2b.py")
config.model.num_layers = int(sys.argv[1])
mc = validate_config(config)
shapes = jax.eval_shape(lambda: nn.unbox(SynerGenVL(mc).init(jax.random.key(0),
                                                            batch_lib.zeros(1, 8, mc.fold_ratio, jnp))))
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32) * 0.02, shapes)
leaves = jax.tree.leaves(params)
model_bytes, largest = sum(x.nbytes for x in leaves), max(x.nbytes for x in leaves)
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
base = rss() - model_bytes       # the process before the parameters (they are all resident)
with tempfile.TemporaryDirectory() as tmp:
  t0 = time.time()
  files = _write_shards(full_export.model_tensors(mc, params, jnp.dtype(sys.argv[2])), storage.path(tmp),
                        jnp.dtype(sys.argv[2]), 5000 << 20)
  seconds = time.time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(model_bytes=model_bytes, largest=largest, peak_rise=peak - base,
                      seconds=seconds, params=sum(x.size for x in leaves), files=len(files))))
"""


def memory() -> dict:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(FLAGS.layers), FLAGS.dtype],
                       check=True, capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  return json.loads(out.stdout.strip().splitlines()[-1])


def speed() -> dict:
  import importlib.util
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from synergen_jax.convert import full_export
  from synergen_jax.core import batch as batch_lib
  from synergen_jax.core.config import load_config, validate_config
  from synergen_jax.data.layout import SpecialTokens, Text, layout_example
  from synergen_jax.infer.decode import GREEDY, Decoder
  from synergen_jax.model.synergen_vl import SynerGenVL
  import flax.linen as nn

  config = load_config("configs/demo.py")
  mc = validate_config(config)
  params = nn.unbox(jax.jit(SynerGenVL(mc).init)(jax.random.key(0),
                                                  batch_lib.zeros(1, 8, mc.fold_ratio, jnp)))
  special = SpecialTokens()
  prompt = layout_example([Text(list(range(10, 26)))], mc.fold, special, add_eos=False)
  decoder = Decoder(mc, params, special)
  n = FLAGS.tokens
  t0 = time.time()
  decoder.generate_text([prompt], n, sampling=GREEDY, stop_tokens=[-1])
  first = time.time() - t0
  t0 = time.time()
  ours = decoder.generate_text([prompt], n, sampling=GREEDY, stop_tokens=[-1])[0]
  ours_s = time.time() - t0

  package = "synergen_bench_export"
  folder = full_export.REMOTE_DIR
  spec = importlib.util.spec_from_file_location(package, os.path.join(folder, "__init__.py"),
                                                submodule_search_locations=[folder])
  sys.modules[package] = importlib.util.module_from_spec(spec)
  conf = importlib.import_module(f"{package}.configuration_synergen_vl")
  modeling = importlib.import_module(f"{package}.modeling_synergen_vl")
  c = full_export.hf_config(mc, config, special.__dict__, "float32")
  model = modeling.SynerGenVLForCausalLM(conf.SynerGenVLConfig(**c)).eval()
  model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                         for k, v in full_export.model_tensors(mc, params)})
  ids = torch.tensor(prompt["text_tokens"][None].astype(np.int64))
  kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=2)
  model.generate(ids, **kw)                     # warm-up
  t0 = time.time()
  theirs = model.generate(ids, **kw)[0, ids.shape[1]:].tolist()
  theirs_s = time.time() - t0
  return dict(params=sum(x.size for x in jax.tree.leaves(params)), tokens=n, ours_s=ours_s,
              first_s=first, theirs_s=theirs_s, same=list(ours) == theirs[:len(ours)],
              threads=torch.get_num_threads())


def main(argv):
  del argv
  m = memory()
  mb = lambda b: f"{b / 2**20:,.0f} MB"
  print(f"| LLM layers (of 24) | parameters | model, float32 | largest tensor | write ({FLAGS.dtype}) "
        "| peak RSS | peak / (model + largest) |")
  print("|---|---|---|---|---|---|---|")
  print(f"| {FLAGS.layers} | {m['params'] / 1e6:,.0f}M | {mb(m['model_bytes'])} | {mb(m['largest'])} "
        f"| {m['seconds']:.1f} s | {mb(m['peak_rise'])} | "
        f"{m['peak_rise'] / (m['model_bytes'] + m['largest']):.2f} |")
  s = speed()
  print()
  print("| model | new tokens | ours (jitted; compile apart) | exported PyTorch (KV cache) | "
        "same greedy ids |")
  print("|---|---|---|---|---|")
  print(f"| demo, random weights ({s['params'] / 1e6:.1f}M) | {s['tokens']} | "
        f"{s['tokens'] / s['ours_s']:.0f} tok/s (first call {s['first_s']:.1f} s) | "
        f"{s['tokens'] / s['theirs_s']:.0f} tok/s ({s['threads']} torch threads) | {s['same']} |")


if __name__ == "__main__":
  app.run(main)
