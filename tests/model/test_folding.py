"""Token folding layout and the fold/unfold modules against hand-written references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import init_params, random_batch, tiny
from synergen_jax.core.batch import grid_to_windows, windows_to_grid
from synergen_jax.model.folding import FoldEmbed, UnfoldHead, window_cell_ids
from synergen_jax.model.synergen_vl import SynerGenVL


@pytest.mark.parametrize("fold", [(1, 1), (2, 2), (2, 4), (4, 2), (1, 8)])
def test_grid_to_windows_matches_loops(rng, fold):
  grid = rng.integers(0, 100, (8, 8))
  fh, fw = fold
  expected = [[grid[wr * fh + i, wc * fw + j] for i in range(fh) for j in range(fw)]
              for wr in range(8 // fh) for wc in range(8 // fw)]
  windows = np.asarray(grid_to_windows(grid, fold))
  np.testing.assert_array_equal(windows, expected)
  np.testing.assert_array_equal(windows_to_grid(windows, (8, 8), fold), grid)
  np.testing.assert_array_equal(window_cell_ids((8, 8), fold), grid_to_windows(
      np.arange(64).reshape(8, 8), fold))


def _fold_params(mc, codes, windows):
  return FoldEmbed(mc).init(jax.random.key(1), codes, windows)["params"]


@pytest.mark.parametrize("fold", ["2x2", "1x4", "4x2"])
def test_fold_embed_is_mlp_of_concatenated_windows(rng, fold):
  """x = MLP(concat_{cells in window, row-major}(E[code] + P[cell])), per window."""
  _, mc = tiny(f"fold={fold}")
  grid = rng.integers(0, mc.codebook_size, mc.code_grid)
  codes = jnp.asarray(grid_to_windows(grid, mc.fold))                    # [N, r]
  windows = jnp.arange(mc.windows_per_image)
  import flax.linen as nn
  p = nn.unbox(_fold_params(mc, codes, windows))
  out = FoldEmbed(mc).apply({"params": p}, codes, windows)
  fh, fw = mc.fold
  nw = mc.code_grid[1] // fw
  for n in range(mc.windows_per_image):
    row0, col0 = (n // nw) * fh, (n % nw) * fw
    pieces = []
    for i in range(fh):
      for j in range(fw):
        cell = (row0 + i) * mc.code_grid[1] + (col0 + j)
        pieces.append(p["code_embed"]["embedding"][grid[row0 + i, col0 + j]] + p["pos_embed"][cell])
    e = jnp.concatenate(pieces)
    h = jax.nn.gelu(e @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"])
    np.testing.assert_allclose(out[n], h @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"], atol=1e-5)


def test_fold_1x1_equals_unfolded_model():
  """With fold (1,1) the model is the plain per-code model: one slot per code embedded as
  MLP(E[c] + P[cell]) in raster order, and each code predicted from the previous slot's hidden state
  alone through the head (a length-1 sequence)."""
  _, mc = tiny("fold=1x1")
  batch = random_batch(mc, rows=2, seq_len=64, seed=4)
  params = init_params(mc, batch)
  model = SynerGenVL(mc)
  out = jax.jit(model.apply)(params, batch)

  p = params["params"]
  fe = p["fold_embed"]
  codes = batch["image_codes"][..., 0]
  cells = batch["window_ids"]               # with 1x1 windows the window index is the raster cell
  h = jax.nn.gelu((fe["code_embed"]["embedding"][codes] + fe["pos_embed"][cells])
                  @ fe["mlp_in"]["kernel"] + fe["mlp_in"]["bias"])
  image = h @ fe["mlp_out"]["kernel"] + fe["mlp_out"]["bias"]
  text = p["text_embed"]["embedding"][batch["text_tokens"]]
  x = jnp.where(batch["modality"][..., None] == 1, image, text)
  hidden = model.apply(params, x, batch, method=SynerGenVL.backbone)
  nll = lambda logits, targets: optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  b, t = np.nonzero(batch["text_weights"])            # row-major: the order the model gathers in
  want = nll(hidden[b, t] @ p["lm_head"]["kernel"], batch["text_targets"][b, t])
  np.testing.assert_allclose(out["text_nll"][out["text_weights"] > 0], want, atol=1e-5)

  b, t = np.nonzero(batch["image_weights"])
  head = UnfoldHead(mc)
  u = {"params": p["unfold_head"]}
  ref = head.apply(u, hidden[b, t], batch["image_targets"][b, t])             # [n, 1, K]
  want = nll(ref, batch["image_targets"][b, t])
  np.testing.assert_allclose(out["image_nll"][out["image_weights"] > 0], want, atol=1e-5)


def test_unfold_head_is_causal(rng):
  """Logit j depends on the prefix and codes[:j] only: changing code k changes no logit <= k."""
  _, mc = tiny("fold=2x4")
  r = mc.fold_ratio
  hidden = jnp.asarray(rng.normal(size=(3, mc.llm.d_model)).astype(np.float32))
  codes = jnp.asarray(rng.integers(0, mc.codebook_size, (3, r)))
  head = UnfoldHead(mc)
  params = head.init(jax.random.key(0), hidden, codes)
  apply = jax.jit(head.apply)
  base = apply(params, hidden, codes)
  for k in range(r):
    changed = apply(params, hidden, codes.at[:, k].set((codes[:, k] + 1) % mc.codebook_size))
    np.testing.assert_array_equal(changed[:, : k + 1], base[:, : k + 1])
    if k < r - 1:
      assert not np.allclose(changed[:, k + 1:], base[:, k + 1:])
