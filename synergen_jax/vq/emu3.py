"""transformers' `Emu3VQVAE` in Flax: the image tokenizer of Emu3 and SynerGen-VL (MoVQGAN-style).

  images [N, H, W, C] --2-D encoder (once: the T = temporal_downsample_factor repeated frames are
  equal)--> repeat over T --causal temporal downsample convs (T -> 1) + temporal res blocks-->
  --quant_conv--> z [N, h, w, D] --Euclidean nearest code--> codes [N, h, w]
  codes --codebook--> q --post_quant_conv--> [post, q] --temporal res blocks + upsample (1 -> T)-->
  frame 0 only --2-D decoder, every norm a SpatialNorm on the temporally processed q--> images

A port, not a redesign: module names follow transformers' state-dict names ("down_block.down.0.
block.1" is `down_block/down_0/block_1`; the middle block's own "block_1"/"attn_1" keep theirs), so
`params_from_state_dict` is a rename plus a layout change (conv OIHW -> HWIO, OIDHW -> DHWIO, linear
[out, in] -> [in, out]). It also reads the original release's names (BAAI Emu3-VisionTokenizer:
"encoder.mid.attn_1.q" 1x1 convs, norms inside the attention blocks), renamed as transformers'
convert_emu3_weights_to_hf.py does. What matches transformers in float32: GroupNorm(32) eps 1e-6
with two-pass variance; BatchNorm3d in eval mode (running statistics, eps 1e-5), kept in the
"batch_stats" collection; causal Conv3d padding (2 frames in front, k - s spatially); (0, 1, 0, 1)
zero pad before the stride-2 convs; nearest upsampling; codes from the argmin of |z|^2 + |e|^2 -
2 z.e (the first of equal distances, as torch.argmin); `decode` returns frame 0 of the T decoded
frames, which is what `Emu3VQVAE.decode` returns for 3-D codes, and only frame 0 goes through the
2-D decoder (frames are independent there). Convs and matmuls use XLA's default precision: full
float32 on CPU; on GPU wrap calls in `jax.default_matmul_precision("highest")` to match torch.

Not supported: video (5-D) input or multi-frame decode, `double_latent`, latent_channels !=
embed_dim (transformers' decoder cannot run those either), heights/widths not divisible by
`downsample`, and `image_sizes` cropping (crop the code grid yourself).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core import state_dict
from synergen_jax.core.errors import CheckpointError, ConfigError
from synergen_jax.vq.vqgan import (SpatialNorm, checked_int, checked_int_list, conv, group_norm,
                                  resize_nearest)

GROUPS = 32                 # transformers hard-codes GroupNorm(num_groups=32) everywhere
BN_EPS = 1e-5               # torch.nn.BatchNorm3d's default

# Emu3VQVAEConfig's defaults (the release's architecture), for keys a config.json leaves out.
_DEFAULTS = dict(codebook_size=32768, embed_dim=4, latent_channels=4, double_latent=False,
                 in_channels=3, out_channels=3, temporal_downsample_factor=4, base_channels=256,
                 channel_multiplier=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(3,),
                 hidden_size=None, num_attention_heads=1)
# The original release's Emu3VisionVQConfig spells some keys differently.
_ORIGINAL_KEYS = dict(z_channels="latent_channels", double_z="double_latent", ch="base_channels",
                      ch_mult="channel_multiplier")
# Keys that do not change the inference network: dropout, and PretrainedConfig's own attributes
# (transformers 4.x and 5.x; `config.to_dict()` writes them all). Any other key is refused, so an
# option this port does not implement is never silently ignored.
_IGNORED = ("attention_dropout", "dropout", "initializer_range", "auto_map", "model_type",
            "architectures", "dtype", "torch_dtype", "transformers_version", "name_or_path",
            "return_dict", "output_hidden_states", "output_attentions", "torchscript",
            "use_bfloat16", "tf_legacy_loss", "pruned_heads", "tie_word_embeddings",
            "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "add_cross_attention",
            "cross_attention_hidden_size", "tie_encoder_decoder", "finetuning_task", "id2label",
            "label2id", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id",
            "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params",
            "problem_type", "use_cache", "max_length", "min_length", "do_sample",
            "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
            "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
            "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
            "num_return_sequences", "output_scores", "return_dict_in_generate",
            "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
            "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens")
MODEL_TYPES = ("emu3_vqgan", "Emu3VisionVQ")


@dataclasses.dataclass(frozen=True)
class Emu3Config:
  codebook_size: int
  embed_dim: int
  latent_channels: int
  in_channels: int
  out_channels: int
  temporal_downsample_factor: int
  base_channels: int
  channel_multiplier: tuple[int, ...]
  num_res_blocks: int
  attn_resolutions: tuple[int, ...]    # level indices, only those < len(channel_multiplier)
  num_attention_heads: int = 1
  image_size: int = 512                # nominal square size (the release's processor: >= 512^2
                                       # pixels); the network takes any H, W divisible by downsample

  @property
  def downsample(self) -> int:
    return 2 ** (len(self.channel_multiplier) - 1)

  @property
  def code_dim(self) -> int:
    return self.embed_dim

  @property
  def channels(self) -> int:
    return self.in_channels

  @property
  def hidden_size(self) -> int:
    return self.base_channels * self.channel_multiplier[-1]

  @classmethod
  def from_hf(cls, hf_config: dict, where: str) -> "Emu3Config":
    """From an `Emu3VQVAEConfig` config.json dict (or the original release's, or a full Emu3
    config's "vq_config"); `where` (the file) is named in every error."""
    def fail(key, value, why):
      raise ConfigError(f"{where}: {key}={value!r} {why}")

    if isinstance(hf_config.get("vq_config"), dict):
      hf_config, where = hf_config["vq_config"], f"{where} (vq_config)"
    model_type = hf_config.get("model_type", MODEL_TYPES[0])
    if model_type not in MODEL_TYPES:
      fail("model_type", model_type, f"is not an Emu3 VQ-VAE config (one of {list(MODEL_TYPES)})")
    known = set(_DEFAULTS) | set(_ORIGINAL_KEYS) | set(_IGNORED)
    unknown = sorted(k for k in hf_config if not k.startswith("_") and k not in known)
    if unknown:
      fail(unknown[0], hf_config[unknown[0]], f"is not an Emu3VQVAE option this port reads "
           f"(unknown keys: {unknown}; known: {sorted(known)})")
    c = dict(_DEFAULTS)
    for key, value in hf_config.items():
      ours = _ORIGINAL_KEYS.get(key, key)
      if ours in _DEFAULTS:
        if ours != key and ours in hf_config and hf_config[ours] != value:
          fail(key, value, f"contradicts {ours}={hf_config[ours]!r} in the same file")
        c[ours] = value

    positive_int = lambda key: checked_int(where, key, c[key])
    int_list = lambda key: checked_int_list(where, key, c[key])

    if c["double_latent"] not in (False, 0):
      fail("double_latent", c["double_latent"], "is not supported (transformers' quant_conv "
           "takes latent_channels inputs, so a doubled encoder output cannot run)")
    mult = int_list("channel_multiplier")
    base = positive_int("base_channels")
    widths = [base * m for m in mult]
    if any(w % GROUPS for w in widths):
      fail("base_channels", base, f"times channel_multiplier {list(mult)} gives widths {widths}; "
           f"each must be a multiple of {GROUPS} (GroupNorm(32))")
    embed, latent = positive_int("embed_dim"), positive_int("latent_channels")
    if latent != embed:
      fail("latent_channels", latent, f"must equal embed_dim={embed}: the decoder runs its "
           "temporal blocks on post_quant_conv's output and the code vectors stacked together")
    tdf = positive_int("temporal_downsample_factor")
    if tdf & (tdf - 1):
      fail("temporal_downsample_factor", tdf, "must be a power of two (one temporal conv per 2x)")
    levels = c["attn_resolutions"]
    if (not isinstance(levels, (list, tuple))
        or any(isinstance(x, bool) or not isinstance(x, int) for x in levels)):
      fail("attn_resolutions", levels, "must be a list of level indices")
    attn = tuple(i for i in levels if 0 <= i < len(mult))    # others are no-ops in transformers
    hidden = c["hidden_size"] if c["hidden_size"] is not None else widths[-1]
    for level in sorted(set(attn)) + [len(mult) - 1]:
      if hidden != widths[level]:
        fail("hidden_size", hidden, f"must equal the width {widths[level]} of attention level "
             f"{level} (attention blocks sit in attn_resolutions {list(attn)} and the mid block)")
    heads = positive_int("num_attention_heads")
    if hidden % heads:
      fail("num_attention_heads", heads, f"must divide hidden_size={hidden}")
    return cls(codebook_size=positive_int("codebook_size"), embed_dim=embed, latent_channels=latent,
               in_channels=positive_int("in_channels"), out_channels=positive_int("out_channels"),
               temporal_downsample_factor=tdf, base_channels=base, channel_multiplier=mult,
               num_res_blocks=positive_int("num_res_blocks"), attn_resolutions=attn,
               num_attention_heads=heads)


# --------------------------------------------------------------------------------------------------
# Layers. 2-D tensors are [B, H, W, C], temporal ones [B, T, H, W, C]; `zq` is the SpatialNorm
# condition (code vectors after the decoder's temporal blocks), None in the encoder.
# --------------------------------------------------------------------------------------------------

class CausalConv3d(nn.Module):
  """Emu3VQVAEConv3d: zero-pads 2 frames in front (whatever the kernel) and k - s spatially."""
  features: int
  kernel: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)

  @nn.compact
  def __call__(self, x):
    pads = [(2, 0)] + [((k - s + 1) // 2, (k - s) // 2)
                       for k, s in zip(self.kernel[1:], self.strides[1:])]
    return nn.Conv(self.features, self.kernel, self.strides, padding=pads, name="conv")(x)


class TemporalDownsample(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    return CausalConv3d(self.features, (4, 3, 3), (2, 1, 1), name="conv")(x)


class TemporalUpsample(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    return CausalConv3d(self.features, (3, 3, 3), name="conv")(jnp.repeat(x, 2, axis=1))


class TemporalResnetBlock(nn.Module):
  """BatchNorm3d (running statistics) -> silu -> causal conv, twice, plus the input."""
  features: int

  @nn.compact
  def __call__(self, x):
    h = x
    for i in (1, 2):
      h = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=f"norm{i}")(h)
      h = CausalConv3d(self.features, (3, 3, 3), name=f"conv{i}")(nn.silu(h))
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1, 1), name="nin_shortcut")(x)
    return x + h


def _norm(features: int, name: str, x, zq):
  return group_norm(GROUPS, name)(x) if zq is None else SpatialNorm(features, name=name)(x, zq)


class ResnetBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, zq=None):
    h = nn.silu(_norm(x.shape[-1], "norm1", x, zq))
    h = conv(self.features, 3, "conv1")(h)
    h = nn.silu(_norm(self.features, "norm2", h, zq))
    h = conv(self.features, 3, "conv2")(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, "nin_shortcut")(x)
    return x + h


class Attention(nn.Module):
  """Emu3VQVAEAttentionBlock: multi-head self-attention over the H*W positions (no mask)."""
  heads: int

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    d = c // self.heads
    seq = x.reshape(b, h * w, c)
    q, k, v = (nn.Dense(c, name=f"{n}_proj")(seq).reshape(b, h * w, self.heads, d) for n in "qkv")
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k) * d ** -0.5
    out = jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(scores, axis=-1), v)
    return nn.Dense(c, name="out_proj")(out.reshape(b, h * w, c)).reshape(b, h, w, c)


def _attend(cfg: Emu3Config, attn: str, norm: str, x, zq):
  """x + attention(norm(x)): the residual and the norm sit outside the attention module."""
  return x + Attention(cfg.num_attention_heads, name=attn)(_norm(x.shape[-1], norm, x, zq))


class Downsample(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Conv(x.shape[-1], (3, 3), (2, 2), padding=((0, 1), (0, 1)), name="conv")(x)


class Upsample(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = resize_nearest(x, 2 * x.shape[1], 2 * x.shape[2])
    return conv(x.shape[-1], 3, "conv")(x)


class MiddleBlock(nn.Module):
  cfg: Emu3Config

  @nn.compact
  def __call__(self, x, zq=None):
    x = ResnetBlock(x.shape[-1], name="block_1")(x, zq)
    x = _attend(self.cfg, "attn_1", "attn_norm", x, zq)
    return ResnetBlock(x.shape[-1], name="block_2")(x, zq)


class DownLevel(nn.Module):
  cfg: Emu3Config
  level: int

  @nn.compact
  def __call__(self, x):
    c = self.cfg
    width = c.base_channels * c.channel_multiplier[self.level]
    for j in range(c.num_res_blocks):
      x = ResnetBlock(width, name=f"block_{j}")(x)
      if self.level in c.attn_resolutions:
        x = _attend(c, f"attn_{j}", f"attn_norms_{j}", x, None)
    if self.level != len(c.channel_multiplier) - 1:
      x = Downsample(name="downsample")(x)
    return x


class UpLevel(nn.Module):
  cfg: Emu3Config
  level: int

  @nn.compact
  def __call__(self, x, zq):
    c = self.cfg
    width = c.base_channels * c.channel_multiplier[self.level]
    for j in range(c.num_res_blocks + 1):
      x = ResnetBlock(width, name=f"block_{j}")(x, zq)
      if self.level in c.attn_resolutions:
        x = _attend(c, f"attn_{j}", f"attn_norms_{j}", x, zq)
    if self.level != 0:
      x = Upsample(name="upsample")(x)
    return x


class DownBlock(nn.Module):
  cfg: Emu3Config

  @nn.compact
  def __call__(self, x):
    for i in range(len(self.cfg.channel_multiplier)):
      x = DownLevel(self.cfg, i, name=f"down_{i}")(x)
    return x


class UpBlock(nn.Module):
  cfg: Emu3Config

  @nn.compact
  def __call__(self, x, zq):
    for i in reversed(range(len(self.cfg.channel_multiplier))):
      x = UpLevel(self.cfg, i, name=f"up_{i}")(x, zq)
    return x


def _temporal_steps(cfg: Emu3Config) -> int:
  return int(math.log2(cfg.temporal_downsample_factor))


class Encoder(nn.Module):
  cfg: Emu3Config

  @nn.compact
  def __call__(self, images):
    """[N, H, W, C] still images -> [N, 1, h, w, latent] (one latent frame)."""
    c = self.cfg
    x = conv(c.base_channels, 3, "conv_in")(images)
    x = DownBlock(c, name="down_block")(x)
    x = MiddleBlock(c, name="middle_block")(x)
    x = conv(c.latent_channels, 3, "conv_out")(nn.silu(group_norm(GROUPS, "norm_out")(x)))
    # transformers repeats an image over T frames and encodes each; they are equal, so encode once.
    t = c.temporal_downsample_factor
    x = jnp.broadcast_to(x[:, None], (x.shape[0], t) + x.shape[1:])
    for i in range(_temporal_steps(c)):
      x = nn.silu(TemporalDownsample(c.latent_channels, name=f"time_conv_{i}")(x))
    for i in range(c.num_res_blocks):
      x = TemporalResnetBlock(c.latent_channels, name=f"time_res_stack_{i}")(x)
    return x


class Decoder(nn.Module):
  cfg: Emu3Config

  @nn.compact
  def __call__(self, post, quant):
    """post_quant_conv output and code vectors, [N, 1, h, w, D] each -> frame 0 [N, H, W, out]."""
    c = self.cfg
    n = post.shape[0]
    x = jnp.concatenate([post, quant], axis=0)       # transformers stacks them on the batch axis
    for i in range(c.num_res_blocks):
      x = TemporalResnetBlock(c.latent_channels, name=f"time_res_stack_{i}")(x)
    for i in range(_temporal_steps(c)):
      x = nn.silu(TemporalUpsample(c.latent_channels, name=f"time_conv_{i}")(x))
    x, zq = x[:n, 0], x[n:, 0]         # frame 0 of T: `Emu3VQVAE.decode(codes [N, h, w])[n]`
    x = conv(c.hidden_size, 3, "conv_in")(x)
    x = MiddleBlock(c, name="middle_block")(x, zq)
    x = UpBlock(c, name="up_block")(x, zq)
    x = nn.silu(SpatialNorm(x.shape[-1], name="norm_out")(x, zq))
    return conv(c.out_channels, 3, "conv_out")(x)


class VectorQuantizer(nn.Module):
  cfg: Emu3Config

  def setup(self):
    self.embedding = nn.Embed(self.cfg.codebook_size, self.cfg.embed_dim, name="embedding")

  def codes(self, z):
    """Nearest code by Euclidean distance, in transformers' |z|^2 + |e|^2 - 2 z.e form."""
    book = self.embedding.embedding
    flat = z.reshape(-1, z.shape[-1])
    d = (jnp.sum(flat ** 2, axis=1, keepdims=True) + jnp.sum(book ** 2, axis=1)
         - 2 * jnp.dot(flat, book.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.argmin(d, axis=1).astype(jnp.int32).reshape(z.shape[:-1])

  def lookup(self, codes):
    return self.embedding(codes)


class Emu3VQ(nn.Module):
  """Still images [N, H, W, C] (H, W divisible by `downsample`, in the processor's range) <-> codes
  [N, H / downsample, W / downsample]. Variables: {"params", "batch_stats"} (BatchNorm's running
  statistics, read-only here)."""
  config: Emu3Config

  def setup(self):
    c = self.config
    self.encoder = Encoder(c)
    self.decoder = Decoder(c)
    self.quantize = VectorQuantizer(c)
    self.quant_conv = CausalConv3d(c.embed_dim, (3, 1, 1))
    self.post_quant_conv = CausalConv3d(c.latent_channels, (3, 1, 1))

  def encode(self, images):
    n, h, w, _ = images.shape
    s = self.config.downsample
    if h % s or w % s:
      raise ValueError(f"image size {h}x{w} is not divisible by the downsampling factor {s}")
    z = self.quant_conv(self.encoder(images))        # [N, 1, h, w, D]
    return self.quantize.codes(z[:, 0])

  def decode(self, codes):
    quant = self.quantize.lookup(codes)[:, None]     # [N, 1, h, w, D]
    return self.decoder(self.post_quant_conv(quant), quant)

  def __call__(self, images):
    return self.decode(self.encode(images))


# --------------------------------------------------------------------------------------------------
# State dicts: transformers' `Emu3VQVAE.save_pretrained` names, or the original release's.
# --------------------------------------------------------------------------------------------------

_LEAF = dict(kernel="weight", scale="weight", embedding="weight", bias="bias", mean="running_mean",
             var="running_var")
_LIST = re.compile(r"^(down|up|block|attn|attn_norms|time_conv|time_res_stack)_(\d+)$")
# convert_emu3_weights_to_hf.py's renames of the release's names, in its order.
_FROM_ORIGINAL = ((r"\.q\.", ".q_proj."), (r"\.k\.", ".k_proj."), (r"\.v\.", ".v_proj."),
                  (r"\.proj_out\.", ".out_proj."), (r"mid\.attn_1\.norm\.", "mid.attn_norm."),
                  (r"attn\.(\d+)\.norm\.", r"attn_norms.\1."), (r"\.down\.", ".down_block.down."),
                  (r"\.up\.", ".up_block.up."), (r"\.mid\.", ".middle_block."))
_ORIGINAL_NAME = re.compile(r"^(encoder|decoder)\.(down|up|mid)\.")
_HF_NAME = re.compile(r"^(encoder|decoder)\.(down_block|up_block|middle_block)\.")


def torch_name(path: str) -> str:
  """Our variable path -> transformers' state-dict name: "encoder/down_block/down_0/block_1/conv1/
  kernel" -> "encoder.down_block.down.0.block.1.conv1.weight"; "batch_stats" leaves mean/var ->
  running_mean/running_var. Only list members end in _<index>, except the middle block's own."""
  *modules, leaf = path.split("/")
  out = []
  for i, m in enumerate(modules):
    match = _LIST.match(m)
    out.append(f"{match[1]}.{match[2]}" if match and (i == 0 or modules[i - 1] != "middle_block")
               else m)
  return ".".join(out + [_LEAF[leaf]])


def original_to_hf_name(name: str) -> str:
  """A release (Emu3VisionVQModel) tensor name -> transformers' name."""
  for pattern, repl in _FROM_ORIGINAL:
    name = re.sub(pattern, repl, name)
  return name


def _torch_shape(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if path.endswith("kernel") and len(shape) >= 4:     # conv HWIO / DHWIO -> OIHW / OIDHW
    return (shape[-1], shape[-2]) + tuple(shape[:-2])
  if path.endswith("kernel"):                         # dense [in, out] -> linear [out, in]
    return tuple(shape[::-1])
  return tuple(shape)


def abstract_variables(cfg: Emu3Config) -> dict[str, jax.ShapeDtypeStruct]:
  """"params/..." and "batch_stats/..." paths -> shapes, from `jax.eval_shape` of the init."""
  s = cfg.downsample                  # shapes do not depend on the image size; the smallest will do
  tree = jax.eval_shape(Emu3VQ(cfg).init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, s, s, cfg.channels), jnp.float32))
  return state_dict.flatten(tree)


def params_from_state_dict(state: dict[str, np.ndarray], cfg: Emu3Config,
                           where: str) -> dict[str, Any]:
  """An `Emu3VQVAE` state dict (transformers' or the original release's names) -> the variables
  {"params", "batch_stats"} that `Emu3VQ(cfg).apply` takes.

  Refuses, before converting anything, a state dict with tensors the config's network lacks, tensors
  it needs that are absent, or shapes it does not imply; the error names `where` and the tensors
  (as the state dict spells them). BatchNorm's num_batches_tracked counters are read and dropped.
  """

  original = any(_ORIGINAL_NAME.match(k) for k in state)
  if original and any(_HF_NAME.match(k) for k in state):
    raise CheckpointError(f"{where} mixes transformers' Emu3VQVAE names (encoder.down_block...) "
                          "with the original release's (encoder.down...); it is neither layout")
  given = {}                                          # transformers' name -> name in `state`
  for k in state:
    given.setdefault(original_to_hf_name(k) if original else k, k)
  hf_names = {k: n for n, k in given.items()}
  spelled = lambda name: given.get(name, name)        # as `state` spells it, where it has it

  wanted = abstract_variables(cfg)
  names = {path: torch_name(path.split("/", 1)[1]) for path in wanted}
  expected = {spelled(names[p]): _torch_shape(p, tuple(leaf.shape)) for p, leaf in wanted.items()}
  counters = {spelled(n.rsplit(".", 1)[0] + ".num_batches_tracked") for n in names.values()
              if n.endswith(".running_mean")}

  def compared(name, shape):
    if (original and hf_names.get(name, name).endswith("_proj.weight") and len(shape) == 4
        and shape[2:] == (1, 1)):
      return shape[:2]                                # the release's 1x1 conv q/k/v/proj_out
    return shape

  layout = "the original release's" if original else "transformers'"
  state_dict.check(
      state, expected, ignored=counters, compared=compared,
      what=f"{where} ({layout} names) does not match its config (an Emu3VQVAE with base_channels="
      f"{cfg.base_channels}, channel_multiplier {list(cfg.channel_multiplier)}, num_res_blocks="
      f"{cfg.num_res_blocks}, codebook_size={cfg.codebook_size})")
  variables = {}
  for path in wanted:
    name = spelled(names[path])
    x = np.asarray(state[name], np.float32)
    if path.endswith("kernel"):
      x = x.reshape(compared(name, x.shape))
      x = np.transpose(x, tuple(range(2, x.ndim)) + (1, 0)) if x.ndim >= 4 else x.T
    variables[path] = np.ascontiguousarray(x)
  return state_dict.nest(variables)
