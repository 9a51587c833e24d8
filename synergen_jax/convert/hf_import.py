"""HF LLM checkpoint -> a SynerGen-VL workdir that train (init_from), sample and score load.

  python -m synergen_jax.convert.hf_import --hf_dir DIR --workdir OUT [--config configs/X.py[:arg]]
      [--config.model.fold=...] [--extra_tokens N] [--allow_pickle]

The LLM fields of `config.model` (layers, widths, heads, vocab, norm eps, RoPE theta, q/k/v biases,
tied embeddings) come from the HF config.json; everything else (fold ratio, codebook, unfold head,
training sections) from --config. The text weights are copied; the vision experts start as copies of
the text FFNs (`config.model.init_vision_from_text`); the fold embedding and unfold head get their usual
random initialisation.

The vocabulary comes from the folder's tokenizer (SentencePiece tokenizer.model, or an HF tokenizer.json
for BPE releases such as Qwen2 and Llama 3; with tokenizer_config.json's added tokens),
read as prepare reads it with --config's data.reserved_tokens: the pieces the data format names
(<pad> <boi> <eoi> <UNCOND> <|im_start|> <|im_end|> <extra_i>) take the release's own tokens, then its
unused ones ([UNUSED_TOKEN_n] in InternLM2), and only what is still missing is appended as new rows
(initialised to the mean pretrained row). InternLM2 needs none: its 92,544 ids hold them all. Train
from the import with --config.data.tokenizer=OUT/hf_files. `--extra_tokens N` appends N rows for
folders with neither tokenizer file; with one, the tokenizer sizes the vocabulary and it is an error.

Memory: parameters are built as host numpy arrays one HF tensor at a time (safetensors files are
memory-mapped), so the peak is the model in config.model.param_dtype plus about one tensor; nothing is
placed on an accelerator and nothing is replicated per device. OUT gets config.json, an Orbax
checkpoint at step 0 (parameters only), hf_import.json (source family and config), and hf_files/
(tokenizer and remote-code files, copied so export can put them back). OUT may be a bucket path
(gs://...); --hf_dir is a local folder (its safetensors are memory-mapped).
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.convert.importer import import_checkpoint

FLAGS = flags.FLAGS
cli.define_config_flag("configs/synergen_vl_2b.py")   # the vision parts and training sections
flags.DEFINE_string("hf_dir", None, "HF checkpoint folder (config.json + *.safetensors)")
flags.DEFINE_string("workdir", None, "output workdir")
flags.DEFINE_integer("extra_tokens", 0, "vocabulary rows to append when --hf_dir has no tokenizer "
                     "(tokenizer.model / tokenizer.json: with one, it sizes the vocabulary)")
flags.DEFINE_bool("allow_pickle", False, "read pickle *.bin weights (runs code from the file)")
flags.DEFINE_integer("seed", 0, "initialisation seed of the vision parts")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  record = import_checkpoint(FLAGS.hf_dir, FLAGS.workdir, FLAGS.config,
                             extra_tokens=FLAGS.extra_tokens, allow_pickle=FLAGS.allow_pickle,
                             seed=FLAGS.seed)
  print(f"hf_import: {record['family']} from {record['source']} ({record['tensors']} tensors) -> "
        f"{FLAGS.workdir} ({record['parameters'] / 1e6:.1f}M parameters); copied {record['copied_files']}")
  tok = record["text_tokenizer"]
  if tok:
    print(f"hf_import: text vocabulary {record['text_vocab']} ids ({tok['release_size']} of the release, "
          f"{record['extra_tokens']} rows appended); on its unused tokens: {tok['reused']}; appended: "
          f"{tok['appended']}; train with --config.data.tokenizer={FLAGS.workdir}/hf_files")
  if record["text_vocab"] != FLAGS.config.model.text_vocab:
    print(f"hf_import: --config has text_vocab={FLAGS.config.model.text_vocab}; runs from this import "
          f"need --config.model.text_vocab={record['text_vocab']}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["hf_dir", "workdir"])
  app.run(main)
