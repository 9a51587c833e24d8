"""Whole-model invariants: causality, packed-segment isolation, init loss, scan/remat equivalence."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import init_params, random_batch, tiny
from synergen_jax.model import accounting
from synergen_jax.model.losses import full_logits_loss, synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL


def _hidden(mc, params, batch):
  model = SynerGenVL(mc)
  return jax.jit(lambda p, b: model.apply(p, model.apply(p, b, method=SynerGenVL.embed), b,
                                          method=SynerGenVL.backbone))(params, batch)


def test_future_slots_never_change_earlier_outputs():
  _, mc = tiny()
  batch = random_batch(mc, rows=2, seq_len=32, seed=5, max_examples=1)
  params = init_params(mc, batch)
  base = _hidden(mc, params, batch)
  rng = np.random.default_rng(0)
  for cut in (3, 10, 20):
    changed = {k: v.copy() for k, v in batch.items()}
    changed["text_tokens"][:, cut:] = rng.integers(6, mc.text_vocab, changed["text_tokens"][:, cut:].shape)
    changed["image_codes"][:, cut:] = rng.integers(0, mc.codebook_size,
                                                   changed["image_codes"][:, cut:].shape)
    changed["modality"][:, cut:] = rng.integers(0, 2, changed["modality"][:, cut:].shape)
    out = _hidden(mc, params, changed)
    np.testing.assert_array_equal(out[:, :cut], base[:, :cut])
    assert not np.allclose(out[:, cut:], base[:, cut:])


def test_packed_segments_do_not_see_each_other():
  _, mc = tiny()
  batch = random_batch(mc, rows=2, seq_len=32, seed=6, max_examples=3)
  params = init_params(mc, batch)
  base = _hidden(mc, params, batch)
  rng = np.random.default_rng(1)
  for row in range(2):
    segs = [s for s in np.unique(batch["segment_ids"][row]) if s > 0]
    assert len(segs) >= 2, "test batch should pack several examples"
    target = segs[0]
    changed = {k: v.copy() for k, v in batch.items()}
    where = changed["segment_ids"][row] == target
    changed["text_tokens"][row, where] = rng.integers(6, mc.text_vocab, where.sum())
    changed["image_codes"][row, where] = rng.integers(0, mc.codebook_size, (where.sum(), mc.fold_ratio))
    out = _hidden(mc, params, changed)
    np.testing.assert_array_equal(out[row, ~where], base[row, ~where])
    assert not np.allclose(out[row, where], base[row, where])


def test_positions_restart_per_segment_make_packing_invisible():
  """An example packed behind another gives the same outputs as the example alone in its row."""
  _, mc = tiny()
  batch = random_batch(mc, rows=1, seq_len=32, seed=7, max_examples=3)
  params = init_params(mc, batch)
  full = _hidden(mc, params, batch)
  second = batch["segment_ids"][0] == 2
  assert second.any()
  alone = {k: np.zeros_like(v) for k, v in batch.items()}
  n = second.sum()
  for k in batch:
    alone[k][0, :n] = batch[k][0, second]
  out = _hidden(mc, params, alone)
  np.testing.assert_allclose(out[0, :n], full[0, second], atol=1e-5)


def test_random_init_loss_is_log_vocab():
  _, mc = tiny()
  batch = random_batch(mc, rows=4, seq_len=32, seed=8)
  params = init_params(mc, batch)
  _, metrics = jax.jit(lambda p: synergen_loss(SynerGenVL(mc).apply(p, batch), 2.0))(params)
  assert metrics["tokens/text"] > 0 and metrics["tokens/image"] > 0
  np.testing.assert_allclose(metrics["loss/text"], np.log(mc.text_vocab), atol=0.05)
  np.testing.assert_allclose(metrics["loss/image"], np.log(mc.codebook_size), atol=0.05)
  np.testing.assert_allclose(metrics["loss"], metrics["loss/text"] + 2 * metrics["loss/image"],
                             rtol=1e-6)


def _stack_layers(params, num_layers):
  """Unrolled layer_i params -> the scanned `layers` params (stacked on a leading axis)."""
  p = jax.tree.map(lambda x: x, params)
  dec = p["params"]["decoder"]
  layers = [dec.pop(f"layer_{i}") for i in range(num_layers)]
  dec["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return p


@pytest.mark.parametrize("arg", ["scan=true", "remat=full", "scan=true,remat=dots"])
def test_scan_and_remat_match_unrolled(arg):
  _, mc = tiny()
  _, mc2 = tiny(arg)
  batch = random_batch(mc, rows=2, seq_len=32, seed=9)
  params = init_params(mc, batch)
  params2 = _stack_layers(params, mc.llm.num_layers) if "scan" in arg else params
  assert jax.tree.structure(params2) == jax.tree.structure(init_params(mc2, batch))

  def grads(mc, params):
    f = lambda p: synergen_loss(SynerGenVL(mc).apply(p, batch), 2.0)[0]
    return jax.jit(jax.value_and_grad(f))(params)

  (l1, g1), (l2, g2) = grads(mc, params), grads(mc2, params2)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  if "scan" in arg:
    g1 = _stack_layers(g1, mc.llm.num_layers)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("tie,arg,unfold_chunk", [(False, "", 256), (True, "", 3),
                                                    (False, "remat=full,scan=true", 3)])
def test_chunked_heads_equal_full_logits(tie, arg, unfold_chunk):
  """Loss and every gradient equal the full-logits loss (f32, 1e-5), over several position chunks and
  vocabulary tiles (with a padded last tile), with the capacities at each row's exact need, and with
  the unfold head run a few windows at a time (padded last chunk; rematerialised per chunk)."""
  config, _ = tiny(arg)
  config.model.update(new_tokens=(3, 4), tie_embeddings=tie)
  from synergen_jax.core.config import validate_config
  mc = validate_config(config)
  batch = random_batch(mc, rows=3, seq_len=32, seed=10)
  params = init_params(mc, batch)
  need = lambda selected: int(selected.sum(-1).max())
  chunked = dataclasses.replace(
      mc, loss_chunk_rows=5, loss_vocab_tile=mc.codebook_size // 3 + 1,
      text_target_capacity=need(batch["text_weights"] > 0),
      image_slot_capacity=need(batch["modality"] == 1),
      unfold_capacity=need(batch["image_weights"] > 0), unfold_chunk=unfold_chunk)
  assert chunked.unfold_capacity < 32 and chunked.text_target_capacity < 32
  assert unfold_chunk > chunked.unfold_capacity or chunked.unfold_capacity % unfold_chunk
  want, want_g = jax.jit(jax.value_and_grad(lambda p: full_logits_loss(SynerGenVL(mc), p, batch, 2.0)))(params)
  got, got_g = jax.jit(jax.value_and_grad(
      lambda p: synergen_loss(SynerGenVL(chunked).apply(p, batch), 2.0)[0]))(params)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(want_g)[0], jax.tree.leaves(got_g)):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_bfloat16_compute_stays_close_to_float32():
  _, mc = tiny()
  mc16 = dataclasses.replace(mc, llm=dataclasses.replace(mc.llm, dtype="bfloat16"),
                             unfold=dataclasses.replace(mc.unfold, dtype="bfloat16"))
  batch = random_batch(mc, rows=2, seq_len=32, seed=11)
  params = init_params(mc, batch)
  l32 = jax.jit(lambda p: synergen_loss(SynerGenVL(mc).apply(p, batch), 2.0)[0])(params)
  l16 = jax.jit(lambda p: synergen_loss(SynerGenVL(mc16).apply(p, batch), 2.0)[0])(params)
  np.testing.assert_allclose(l16, l32, rtol=1e-2)


def test_new_tokens_use_their_own_rows():
  """With new_tokens, those ids read new_token_embed / new_token_head; the text table rows are unused."""
  config, _ = tiny()
  config.model.new_tokens = (3, 4)
  from synergen_jax.core.config import validate_config
  mc = validate_config(config)
  batch = random_batch(mc, rows=2, seq_len=32, seed=4)
  params = init_params(mc, batch)
  model = SynerGenVL(mc)
  hidden = model.apply(params, model.apply(params, batch, method=model.embed), batch,
                       method=model.backbone)
  logits = model.apply(params, hidden, method=model.text_logits)
  p = params["params"]
  np.testing.assert_allclose(logits[..., 3], hidden @ p["new_token_head"][:, 0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[..., 5], hidden @ p["lm_head"]["kernel"][:, 5], rtol=1e-5, atol=1e-5)
  grads = jax.grad(lambda q: synergen_loss(model.apply(q, batch), 2.0)[0])(params)["params"]
  assert float(jnp.abs(grads["text_embed"]["embedding"][3:5]).sum()) == 0.0
  assert float(jnp.abs(grads["lm_head"]["kernel"][:, 3:5]).sum()) == 0.0
  uses_new = bool(np.isin(batch["text_tokens"], [3, 4]).any())
  assert uses_new and float(jnp.abs(grads["new_token_embed"]).sum()) > 0
  assert accounting.param_count(mc).total == sum(x.size for x in jax.tree.leaves(params))
