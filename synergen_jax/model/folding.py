"""Token folding (paper Eq. 1) and unfolding (paper Eq. 3).

Layout. An image's h x w code grid is cut into non-overlapping fh x fw windows (fh rows, fw columns,
r = fh*fw codes each), in raster order, codes row-major inside (`batch.grid_to_windows`).

Fold (input side): x = MLP(concat_r(CodeEmbed(code) + PosEmbed(cell))) -> one d_model vector per
window. The 2-D position embedding has one entry per grid cell and is added *before* folding.

Unfold (output side): a small causal transformer of the LLM's block design. For the window predicted at
slot i it reads [P(h_i), E(v_1), ..., E(v_{r-1})] (+ its own position table over the r positions) and
predicts v_1 .. v_r. P is a linear projection from the LLM width to the head width; the LLM hidden
state entering as a prefix is our documented choice (the paper does not say how h_i enters).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core.batch import grid_to_windows
from synergen_jax.core.config import ModelConfig
from synergen_jax.model.chunked_xent import linear_cross_entropy
from synergen_jax.model.layers import Classifier, dtype_of, lookup, normal_init, zeros_init
from synergen_jax.model.transformer import DecoderStack
from synergen_jax.parallel.sharding import per_batch_shard


# ---------------------------------------------------------------------------------------------------
# Layout helpers (numpy or jax arrays).
# ---------------------------------------------------------------------------------------------------

def window_cell_ids(code_grid, fold) -> np.ndarray:
  """[N, r] grid-cell index (row * w + col) of every code of every window."""
  cells = np.arange(code_grid[0] * code_grid[1], dtype=np.int32).reshape(code_grid)
  return np.asarray(grid_to_windows(cells, fold))


# ---------------------------------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------------------------------

class FoldEmbed(nn.Module):
  """Image codes of one window -> one LLM input vector.

  The MLP is Linear(r*code_dim -> fold_mlp_hidden) -> GELU -> Linear(-> d_model), the shape of the
  InternVL projector the paper's lineage uses (the paper only says "MLP").
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, codes: jax.Array, window_ids: jax.Array) -> jax.Array:
    """codes: [..., r] ints; window_ids: [...] window index within its image -> [..., d_model]."""
    cfg = self.cfg
    pdt, cdt = dtype_of(cfg.llm.param_dtype), dtype_of(cfg.llm.dtype)
    grid_cells = cfg.code_grid[0] * cfg.code_grid[1]
    code_embed = nn.Embed(cfg.codebook_size, cfg.code_embed_dim, dtype=cdt, param_dtype=pdt,
                          embedding_init=normal_init(("codebook", "code_embed")), name="code_embed")
    pos_embed = self.param("pos_embed", normal_init(("grid", "code_embed")),
                           (grid_cells, cfg.code_embed_dim), pdt)
    cells = jnp.asarray(window_cell_ids(cfg.code_grid, cfg.fold))[window_ids]     # [..., r]
    e = lookup((code_embed.embedding.astype(cdt), pos_embed.astype(cdt)), (codes, cells),
               (("codebook", "code_embed"), ("grid", "code_embed")))                # [..., r, dc]
    e = e.reshape(e.shape[:-2] + (cfg.fold_ratio * cfg.code_embed_dim,))            # row-major concat
    h = nn.Dense(cfg.fold_mlp_hidden, dtype=cdt, param_dtype=pdt,
                 kernel_init=normal_init(("fold_in", "mlp")), bias_init=zeros_init(("mlp",)),
                 name="mlp_in")(e)
    h = nn.gelu(h)
    return nn.Dense(cfg.llm.d_model, dtype=cdt, param_dtype=pdt,
                    kernel_init=normal_init(("mlp", "embed")), bias_init=zeros_init(("embed",)),
                    name="mlp_out")(h)


class UnfoldHead(nn.Module):
  """Causal transformer that predicts the r codes of a window from one LLM hidden state.

  With decode=True it has its own KV cache over the r positions of one window: `first` reads the
  LLM state and gives the logits of code 1, `next_code` feeds code j and gives those of code j+1.
  """
  cfg: ModelConfig
  decode: bool = False

  def setup(self):
    cfg, u = self.cfg, self.cfg.unfold
    pdt, cdt = dtype_of(u.param_dtype), dtype_of(u.dtype)
    self.prefix_proj = nn.Dense(u.d_model, dtype=cdt, param_dtype=pdt,
                                kernel_init=normal_init(("embed", "unfold_embed")),
                                bias_init=zeros_init(("unfold_embed",)))
    self.code_embed = nn.Embed(cfg.codebook_size, u.d_model, dtype=cdt, param_dtype=pdt,
                               embedding_init=normal_init(("codebook", "unfold_embed")))
    self.pos_table = self.param("pos_table", normal_init((None, "unfold_embed")),
                                (cfg.fold_ratio, u.d_model), pdt)
    # Rematerialised per chunk of windows in loss_terms, so not layer by layer as well.
    self.blocks = DecoderStack(dataclasses.replace(u, remat_policy="none"), decode=self.decode)
    self.classifier = Classifier(u.d_model, cfg.codebook_size, ("unfold_embed", "codebook"),
                                 u.dtype, u.param_dtype)

  def __call__(self, hidden: jax.Array, codes: jax.Array) -> jax.Array:
    """Teacher-forced logits (inference and tests; training uses `loss_terms`).

    hidden: [N, d_model] LLM outputs of the predicting slots; codes: [N, r] target codes.
    Returns [N, r, codebook_size] float32 logits; position j sees hidden and codes[:, :j] only.
    """
    return self.classifier(self.states(hidden, codes)).astype(jnp.float32)

  def states(self, hidden: jax.Array, codes: jax.Array) -> jax.Array:
    """The head's final states [N, r, du] before the classifier (same inputs as __call__)."""
    r = self.cfg.fold_ratio
    prefix = self.prefix_proj(hidden)[:, None, :]                                   # [N, 1, du]
    embedded = lookup((self.code_embed.embedding.astype(prefix.dtype),),
                      (codes[:, : r - 1],), (("codebook", "unfold_embed"),))
    x = jnp.concatenate([prefix, embedded], axis=1)                                 # [N, r, du]
    x = x + self.pos_table.astype(x.dtype)[None]
    n = x.shape[0]
    positions = jnp.broadcast_to(jnp.arange(r, dtype=jnp.int32), (n, r))
    return self.blocks(x, positions, None, jnp.zeros((n, r), jnp.int32))

  def loss_terms(self, hidden: jax.Array, codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """hidden: [B, W, d_model], codes: [B, W, r] -> (nll, hit), each [B, W, r] float32.

    The windows go through the head and its chunked cross-entropy (the [B, W, r, codebook] logits
    are never built) `unfold_chunk` windows per row at a time: a scan whose chunks are each
    rematerialised whole when the config asks for remat, so the head's activations are held for one
    chunk, not for every target window of the row (at paper scale ~10x the LLM's positions).
    """
    b, w, r = codes.shape
    n = -(-w // self.cfg.unfold_chunk)                  # chunks per row, equal sizes, padded
    size = -(-w // n)

    def chunk(module, carry, xs):
      return carry, module._chunk_loss(*xs)
    if self.cfg.unfold.remat_policy != "none":     # the whole chunk, instead of layer by layer
      chunk = nn.remat(chunk, policy=jax.checkpoint_policies.nothing_saveable, prevent_cse=False)
    if n == 1:
      return chunk(self, None, (hidden, codes))[1]
    pad = ((0, 0), (0, n * size - w), (0, 0))
    hidden = jnp.pad(hidden, pad).reshape(b, n, size, -1)
    codes = jnp.pad(codes, pad).reshape(b, n, size, r)
    scan = nn.scan(chunk, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1, length=n)
    _, (nll, hit) = scan(self, None, (hidden, codes))
    return (nll.reshape(b, n * size, r)[:, :w], hit.reshape(b, n * size, r)[:, :w])

  def _chunk_loss(self, hidden, codes):
    b, w, r = codes.shape
    x = self.states(hidden.reshape(b * w, -1), codes.reshape(b * w, r))            # [B*W, r, du]
    m = self.cfg
    nll, hit = per_batch_shard(
        lambda x, t, kernel: linear_cross_entropy(
            x.reshape(-1, x.shape[-1]), kernel, t.reshape(-1), chunk_rows=m.loss_chunk_rows,
            vocab_tile=m.loss_vocab_tile),
        (x.reshape(b, w * r, -1), codes), (self.classifier.kernel.astype(x.dtype),),
        (("unfold_embed", "codebook"),))
    return nll.reshape(b, w, r), hit.reshape(b, w, r)

  # -- KV-cached sampling, one code at a time (decode=True) -----------------------------------------

  def first(self, hidden: jax.Array) -> jax.Array:
    """hidden: [N, d_model] -> [N, codebook_size] logits of the window's first code."""
    return self._step(self.prefix_proj(hidden), 0)

  def next_code(self, codes: jax.Array, j) -> jax.Array:
    """codes: [N] code j-1 of the window (0-based), j >= 1 -> [N, codebook_size] logits of code j."""
    return self._step(self.code_embed(codes), j)

  def _step(self, x, j):
    n = x.shape[0]
    x = (x + self.pos_table.astype(x.dtype)[j])[:, None, :]
    positions = jnp.full((n, 1), j, jnp.int32)
    x = self.blocks(x, positions, None, jnp.zeros((n, 1), jnp.int32))
    return self.classifier(x[:, 0]).astype(jnp.float32)
