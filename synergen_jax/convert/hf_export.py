"""A workdir -> an HF checkpoint folder that transformers loads.

  python -m synergen_jax.convert.hf_export --workdir W --out DIR [--dtype bfloat16] [--max_shard_mb 5000]
  python -m synergen_jax.convert.hf_export --workdir W --out DIR --text_only [--family llama|qwen2|internlm2]

Full export (the default for a multimodal workdir: one whose config names prepared data or an image
tokenizer): the whole SynerGen-VL as transformers remote code with its weights, the run's text
tokenizer and chat template, and the image tokenizer (synergen_jax/convert/full_export.py; load it
with `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`, see docs/export.md).

--text_only (the default for an imported LLM without an image tokenizer): the text path as a stock
llama / qwen2 / internlm2 checkpoint: config.json, model.safetensors (or shards +
model.safetensors.index.json) and the tokenizer / remote-code files an import copied along. The
family defaults to the imported one, else qwen2 when the model has q/k/v biases and llama otherwise.
Only the text experts, the text embedding and LM head are written; the rows of the new tokens
(<boi> <eoi> <UNCOND>) go into the embedding / LM-head tables at their ids.
--workdir and --out may be bucket paths (gs://...).
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.convert.exporter import export_checkpoint
from synergen_jax.convert.full_export import export_full
from synergen_jax.convert.hf_families import FAMILIES
from synergen_jax.infer.loader import prepared_dir
from synergen_jax.train.checkpoint import read_config

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training or import workdir")
flags.DEFINE_string("out", None, "new HF checkpoint folder")
flags.DEFINE_boolean("text_only", None, "export the text path as a stock HF LLM (default: only for "
                     "a workdir without an image tokenizer)")
flags.DEFINE_enum("family", None, list(FAMILIES), "--text_only: HF family to write (default: the "
                  "imported one)")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "tensor dtype on disk")
flags.DEFINE_integer("max_shard_mb", 5000, "largest safetensors shard")


def multimodal(workdir: str) -> bool:
  """Whether the workdir's config names an image tokenizer (its prepared data's, or config.vq's)."""
  config = read_config(workdir)
  return bool(prepared_dir(config) or config.vq.get("workdir"))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  text_only = FLAGS.text_only if FLAGS.text_only is not None else not multimodal(FLAGS.workdir)
  if not text_only:
    if FLAGS.family:
      raise app.UsageError("--family applies to --text_only exports")
    r = export_full(FLAGS.workdir, FLAGS.out, dtype=FLAGS.dtype,
                    max_shard_bytes=FLAGS.max_shard_mb << 20)
    print(f"hf_export: step {r['step']} of {FLAGS.workdir} -> {FLAGS.out} (full SynerGen-VL, "
          f"{len(r['files'])} weight files, chat template: {r['trained_on_chat']}, {r['seconds']} s)")
    return
  r = export_checkpoint(FLAGS.workdir, FLAGS.out, family=FLAGS.family, dtype=FLAGS.dtype,
                        max_shard_bytes=FLAGS.max_shard_mb << 20)
  print(f"hf_export: step {r['step']} of {FLAGS.workdir} -> {FLAGS.out} as {r['family']} "
        f"({len(r['files'])} files; copied {r['copied']})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
