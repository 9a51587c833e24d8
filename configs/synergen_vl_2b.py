"""SynerGen-VL at paper scale (arXiv 2412.09604): InternLM2-1.8B + vision experts, 3.6B / 2.4B params.

  python -m synergen_jax.train --config configs/synergen_vl_2b.py:stage=1 --workdir gs://BUCKET/s1

From the paper / InternLM2-1.8B: 24 layers, d_model 2048, 16 heads, 8 kv heads, head_dim 128, SwiGLU
8192, RMSNorm eps 1e-5, RoPE theta 1e6, text vocab 92,544 (untied head), vision experts on every layer
initialised from the text FFN, Emu3 tokenizer (K = 32,768, 512x512 -> 64x64 codes), fold 2x8 (256 slots
per image), a 4-layer unfold head of the same block, lambda = 2, stage-1 sequence length 4,096.
Our choices where the paper is silent: code embedding width 2048 (= d_model); fold MLP
Linear(16*2048 -> 2048) -> GELU -> Linear(2048 -> 2048); the unfold head has the LLM's exact block
shape and reads the LLM state through a 2048 -> 2048 projection as a prefix; losses are means over
targets (see synergen_jax/model/losses.py). Parameter count: 3.634B total, 2.426B activated per token
(`python -m synergen_jax.summary --config configs/synergen_vl_2b.py --steps 0`); the paper reports
3.6B / 2.4B.

The LLM is InternLM2-1.8B, imported once, and its tokenizer folder is the text tokenizer; the image
tokenizer is Emu3's, imported once from its release and named by config.vq.workdir:

  python -m synergen_jax.convert.hf_import --hf_dir internlm2-1_8b --workdir ckpt/internlm2 \
      --config configs/synergen_vl_2b.py
  python -m synergen_jax.convert.vq_import --hf_dir Emu3-VisionTokenizer --workdir tok/emu3 \
      --image_size 512
  python -m synergen_jax.prepare --config configs/synergen_vl_2b.py:stage=1 --out data/s1 \
      --vq_workdir tok/emu3 --config.data.tokenizer=ckpt/internlm2/hf_files --config.data.path=raw.jsonl
  python -m synergen_jax.train --config configs/synergen_vl_2b.py:stage=1 --workdir runs/s1 \
      --config.vq.workdir=tok/emu3 --config.train.init_from=ckpt/internlm2 \
      --config.data.tokenizer=ckpt/internlm2/hf_files --config.data.path=data/s1

The paper's data by stage is configs/data/synergen_vl_stages.py: `raw=DIR,component=NAME` prepares
one of the stage's sources from its files under DIR, `prepared=DIR` trains on the stage's mixture of
prepared components DIR/<name>, and `prepare --check` lists what each component finds on disk.

text_vocab stays InternLM2's 92,544: <pad> <boi> <eoi> <UNCOND> and the data.reserved_tokens
<extra_i> pieces take free [UNUSED_TOKEN_n] ids of its tokenizer, <|im_start|> / <|im_end|> are its own
(ids 92,543 / 92,542), so the import appends no row (data/tokenizers.py). An LLM whose tokenizer has
no room gets rows appended; then set --config.model.text_vocab to the import's (hf_import.json).
"""

import os

from synergen_jax.core.config import base_config, load_module, parse_arg

STAGE_SEQ_LEN = {"1": 4096, "2": 8192, "sft": 16384}   # paper Tab. 8


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 8), stage="1", scan=True, remat="full", raw="", component="",
                  prepared="")
  # 92,544 = InternLM2's rows, every named piece included (the module docstring says why).
  internlm2_1p8b = dict(text_vocab=92_544, num_layers=24, d_model=2048, num_heads=16,
                        num_kv_heads=8, head_dim=128, mlp_dim=8192, norm_eps=1e-5,
                        rope_theta=1_000_000.0)
  block = {k: internlm2_1p8b[k] for k in ("d_model", "num_heads", "num_kv_heads", "head_dim",
                                          "mlp_dim")}
  config = base_config(
      model=dict(**internlm2_1p8b, codebook_size=32_768, code_embed_dim=2048, code_grid=(64, 64),
                 fold_mlp_hidden=2048, scan_layers=arg.scan, remat_policy=arg.remat,
                 dtype="bfloat16"),
      unfold=dict(num_layers=4, **block),
      seq_len=STAGE_SEQ_LEN[arg.stage], fold=arg.fold)
  config.stage = arg.stage
  config.vq.update(downsample=8, channels=3)   # Emu3-style tokenizer: 512 px -> 64x64 codes
  config.data.max_tiles = {"1": 1, "2": 6, "sft": 12}[arg.stage]   # + thumbnail, as in the paper
  config.data.name = "jsonl"   # your own corpus: --config.data.path=...; or the paper's recipe:
  _stage_data(config, arg)
  # Paper Tab. 8: AdamW (0.9, 0.95, eps 1e-8), 200 warm-up steps; S1 1e-4 constant, wd 0.05;
  # S2 5e-5 cosine, wd 0.05; SFT 5e-5 cosine, wd 0.01.
  config.optim.update(b1=0.9, b2=0.95, eps=1e-8, warmup_steps=200, min_lr_ratio=0.0,
                      learning_rate={"1": 1e-4, "2": 5e-5, "sft": 5e-5}[arg.stage],
                      schedule={"1": "constant", "2": "cosine", "sft": "cosine"}[arg.stage],
                      weight_decay={"1": 0.05, "2": 0.05, "sft": 0.01}[arg.stage])
  config.train.batch_size = {"1": 256, "2": 128, "sft": 64}[arg.stage]   # x seq_len: ~1M slots
  config.train.steps = {"1": 95_000, "2": 35_000, "sft": 12_000}[arg.stage]
  # FSDP over the whole slice: billions of parameters and their Adam moments are never copied whole
  # onto every chip, and a mesh that would replicate more than 1% of the parameter bytes fails first.
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  config.train.max_replicated_fraction = 0.01
  return config


def _stage_data(config, arg) -> None:
  """The paper's sources for the stage (configs/data/synergen_vl_stages.py): `raw=DIR` with
  `component=NAME` prepares one source; `prepared=DIR` trains on the stage's mixture of the prepared
  components DIR/<name>. data.components names them for `prepare --check`."""
  recipe = load_module(os.path.join(os.path.dirname(__file__), "data", "synergen_vl_stages.py"),
                       "data recipe")
  config.data.components = tuple(s.name for s in recipe.sources(arg.stage))
  if arg.component:
    recipe.apply_component(config, arg.stage, arg.component, arg.raw or ".")
  elif arg.prepared:
    config.data.mixture = recipe.mixture(arg.stage, arg.prepared)
