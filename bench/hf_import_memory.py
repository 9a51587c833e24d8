"""Peak host memory of `convert.hf_import` against the size of what it builds.

  python -m bench.hf_import_memory [--layers 8 --d_model 1024 --vocab 32000]
      [--config configs/tiny.py[:arg]] [--config.model.code_embed_dim=...]

Writes a random Llama checkpoint (bf16 safetensors, 2 shards) of the given shape, then imports it in a
fresh process with the config's vision parts (default configs/tiny.py) and reports that process's peak RSS above its RSS
just before the import. The target: model bytes (float32, vision experts included) plus about one
tensor, i.e. no second copy of the model and nothing per device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

from synergen_jax.core import cli

FLAGS = flags.FLAGS
cli.define_config_flag("configs/tiny.py")
flags.DEFINE_integer("layers", 8, "LLM layers of the random checkpoint")
flags.DEFINE_integer("d_model", 1024, "its width")
flags.DEFINE_integer("vocab", 32000, "its vocabulary")

CHILD = r"""
import json, resource, sys
import jax, numpy as np
from synergen_jax.core import cli
from synergen_jax.convert.importer import import_checkpoint
import synergen_jax.convert.importer, orbax.checkpoint   # everything imported before the baseline
def rss_mb():
  return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss_mb()
record = import_checkpoint(sys.argv[1], sys.argv[2], cli.reload(sys.argv[3], json.loads(sys.argv[4])))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(base_mb=base, peak_mb=peak, parameters=record["parameters"])))
"""


def write_checkpoint(path: str, layers: int, d: int, vocab: int) -> int:
  import torch
  from safetensors.torch import save_file
  f = 4 * d * 11 // 4 // 64 * 64           # Llama-like SwiGLU width
  kv_heads, head_dim = d // 128, 64
  heads = d // head_dim
  config = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=vocab,
                hidden_size=d, intermediate_size=f, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
  os.makedirs(path, exist_ok=True)
  json.dump(config, open(os.path.join(path, "config.json"), "w"))
  g = torch.Generator().manual_seed(0)
  rnd = lambda *shape: (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
  shards = [{"model.embed_tokens.weight": rnd(vocab, d), "model.norm.weight": rnd(d)},
            {"lm_head.weight": rnd(vocab, d)}]
  largest = vocab * d * 4
  for i in range(layers):
    p = f"model.layers.{i}."
    shards[i % 2].update({
        p + "self_attn.q_proj.weight": rnd(heads * head_dim, d),
        p + "self_attn.k_proj.weight": rnd(kv_heads * head_dim, d),
        p + "self_attn.v_proj.weight": rnd(kv_heads * head_dim, d),
        p + "self_attn.o_proj.weight": rnd(d, heads * head_dim),
        p + "mlp.gate_proj.weight": rnd(f, d), p + "mlp.up_proj.weight": rnd(f, d),
        p + "mlp.down_proj.weight": rnd(d, f),
        p + "input_layernorm.weight": rnd(d), p + "post_attention_layernorm.weight": rnd(d)})
  index = {}
  for k, shard in enumerate(shards):
    name = f"model-{k + 1:05d}-of-00002.safetensors"
    save_file(shard, os.path.join(path, name))
    index.update({n: name for n in shard})
  json.dump({"weight_map": index}, open(os.path.join(path, "model.safetensors.index.json"), "w"))
  return largest


def main(argv):
  del argv
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tmp:
    largest = write_checkpoint(os.path.join(tmp, "hf"), FLAGS.layers, FLAGS.d_model, FLAGS.vocab)
    size = sum(os.path.getsize(os.path.join(tmp, "hf", n)) for n in os.listdir(os.path.join(tmp, "hf")))
    spec = os.path.abspath(cli.config_spec().partition(":")[0]) + (
        ":" + cli.config_spec().partition(":")[2] if ":" in cli.config_spec() else "")
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "hf"), os.path.join(tmp, "out"),
                          spec, json.dumps(cli.overrides())], check=True, capture_output=True,
                         text=True, cwd=root, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    r = json.loads(out.stdout.strip().splitlines()[-1])
  model_mb = r["parameters"] * 4 / 2**20
  rise = r["peak_mb"] - r["base_mb"]
  print("| checkpoint on disk (bf16) | model, float32 (with vision experts) | largest tensor, f32 "
        "| peak RSS rise | rise / (model + largest) |")
  print("|---|---|---|---|---|")
  print(f"| {size / 2**20:.0f} MB | {model_mb:.0f} MB ({r['parameters'] / 1e6:.0f}M params) | "
        f"{largest / 2**20:.0f} MB | {rise:.0f} MB | {rise / (model_mb + largest / 2**20):.2f} |")


if __name__ == "__main__":
  app.run(main)
