"""The text part of a workdir -> an HF checkpoint folder that transformers loads.

  python -m synergen_jax.convert.hf_export --workdir W --out DIR [--family llama|qwen2|internlm2]
      [--dtype bfloat16] [--max_shard_mb 5000]

Writes config.json, model.safetensors (or shards + model.safetensors.index.json) and the tokenizer /
remote-code files an import copied along. The family defaults to the imported one, else qwen2 when the
model has q/k/v biases and llama otherwise. Only the text path is exported: the text experts, the
text embedding and LM head; the rows of the new tokens (<boi> <eoi> <UNCOND>) are written into the
embedding / LM-head tables at their ids. Vision experts, fold embedding and unfold head stay behind.
--workdir and --out may be bucket paths (gs://...).
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.convert.exporter import export_checkpoint
from synergen_jax.convert.hf_families import FAMILIES

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training or import workdir")
flags.DEFINE_string("out", None, "new HF checkpoint folder")
flags.DEFINE_enum("family", None, list(FAMILIES), "HF family to write (default: the imported one)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "tensor dtype on disk")
flags.DEFINE_integer("max_shard_mb", 5000, "largest safetensors shard")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  r = export_checkpoint(FLAGS.workdir, FLAGS.out, family=FLAGS.family, dtype=FLAGS.dtype,
                        max_shard_bytes=FLAGS.max_shard_mb << 20)
  print(f"hf_export: step {r['step']} of {FLAGS.workdir} -> {FLAGS.out} as {r['family']} "
        f"({len(r['files'])} files; copied {r['copied']})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
