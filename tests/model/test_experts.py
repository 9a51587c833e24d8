"""Routed vision experts == masked dense reference; routing sends no gradient to the unused expert."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import init_params, random_batch, tiny
from synergen_jax.model.experts import dense_reference_ffn, routed_ffn
from synergen_jax.model.losses import synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL


def _weights(rng, e=2, d=16, f=24):
  return [jnp.asarray(rng.normal(size=s).astype(np.float32) * 0.3)
          for s in ((e, d, f), (e, d, f), (e, f, d))]


@pytest.mark.parametrize("image_share", [0.0, 0.3, 1.0])
def test_routed_equals_dense_values_and_grads(rng, image_share):
  x = jnp.asarray(rng.normal(size=(3, 10, 16)).astype(np.float32))
  modality = jnp.asarray((rng.random((3, 10)) < image_share).astype(np.int32))
  w = _weights(rng)
  np.testing.assert_allclose(routed_ffn(x, modality, *w), dense_reference_ffn(x, modality, *w),
                             atol=1e-5)
  loss = lambda fn: lambda x, *w: (fn(x, modality, *w) ** 2).sum()
  g_routed = jax.grad(loss(routed_ffn), argnums=(0, 1, 2, 3))(x, *w)
  g_dense = jax.grad(loss(dense_reference_ffn), argnums=(0, 1, 2, 3))(x, *w)
  for a, b in zip(g_routed, g_dense):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_model_routed_equals_dense_reference():
  _, mc = tiny()
  batch = random_batch(mc, rows=2, seq_len=32, seed=1)
  # make the two experts differ (they start as copies) so a routing mistake shows
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 2.0 if "'vision_" in jax.tree_util.keystr(p) else x, init_params(mc, batch))

  def loss(params, routed):
    out = SynerGenVL(mc, routed_experts=routed).apply(params, batch)
    return synergen_loss(out, 2.0)[0]

  loss = jax.jit(loss, static_argnums=1)
  np.testing.assert_allclose(loss(params, True), loss(params, False), rtol=1e-5)
  g_r, g_d = (jax.grad(loss)(params, routed) for routed in (True, False))
  for a, b in zip(jax.tree.leaves(g_r), jax.tree.leaves(g_d)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def _expert_grads(mc, batch):
  """Summed |gradient| of the text (expert 0) and vision (expert 1) FFN weights of all layers."""
  params = init_params(mc, batch)
  grads = jax.jit(jax.grad(
      lambda p: synergen_loss(SynerGenVL(mc).apply(p, batch), 2.0)[0]))(params)
  ffns = [grads["params"]["decoder"][f"layer_{i}"]["ffn"] for i in range(mc.llm.num_layers)]
  def total(expert):
    return sum(float(jnp.abs(w).sum()) for ffn in ffns for k, w in ffn.items() if k.startswith(expert))
  text, vision = total("text_"), total("vision_")
  assert len(ffns[0]) == 6        # text_/vision_ x gate/up/down
  return text, vision


def test_text_only_batch_gives_zero_gradient_to_vision_experts():
  _, mc = tiny()
  batch = random_batch(mc, rows=2, seq_len=32, seed=2)
  for k in ("modality", "image_weights", "window_ids"):
    batch[k] = np.zeros_like(batch[k])
  text, vision = _expert_grads(mc, batch)
  assert text > 0 and vision == 0.0


def test_image_only_batch_gives_zero_gradient_to_text_experts():
  _, mc = tiny()
  batch = random_batch(mc, rows=2, seq_len=32, seed=3)
  batch["modality"] = np.ones_like(batch["modality"])
  batch["text_weights"] = np.zeros_like(batch["text_weights"])
  text, vision = _expert_grads(mc, batch)
  assert vision > 0 and text == 0.0


def test_vision_experts_start_as_copies_of_text_ffn():
  _, mc = tiny()
  batch = random_batch(mc, rows=1, seq_len=32)
  params = init_params(mc, batch)
  ffn = params["params"]["decoder"]["layer_0"]["ffn"]
  for kind in ("gate", "up", "down"):
    np.testing.assert_array_equal(ffn[f"text_{kind}"], ffn[f"vision_{kind}"], err_msg=kind)
  assert not np.array_equal(ffn["text_gate"], params["params"]["decoder"]["layer_1"]["ffn"]["text_gate"])
