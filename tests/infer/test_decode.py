"""KV-cached decoding equals recomputing the full forward; sampling filters do what they say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import init_params, random_batch, tiny
from synergen_jax.data.layout import Image, SpecialTokens, Text, layout_example
from synergen_jax.infer.decode import (GREEDY, Decoder, Sampling, caption_prompt, generation_prompt,
                                       left_pad, row_keys, sample_logits, sample_rows)
from synergen_jax.model.synergen_vl import SynerGenVL

SPECIAL = SpecialTokens()


def _model_and_params(arg=""):
  _, mc = tiny(arg)
  params = init_params(mc, random_batch(mc, rows=1, seq_len=32, seed=1))
  # A sharper random model (weights x5): logits far from ties, so greedy paths are well defined.
  return mc, jax.tree.map(lambda x: x * 5.0, params)


def _full_hidden(mc, params, batch):
  return _jitted_hidden(mc)(params, batch)


_CACHE = {}


def _jitted_hidden(mc):
  if mc not in _CACHE:
    model = SynerGenVL(mc)
    _CACHE[mc] = jax.jit(lambda p, b: model.apply(p, b, method=SynerGenVL.hidden_states))
  return _CACHE[mc]


def _last_hidden(mc, params, laid, length=48):
  """Full forward of one laid-out prefix, right-padded to a fixed length (one compile): causal
  attention makes the padding invisible to the prefix's last slot."""
  n = len(laid["text_tokens"])
  batch = {k: np.zeros((1, length) + laid[k].shape[1:], np.int32)
           for k in ("text_tokens", "image_codes", "window_ids", "modality", "positions")}
  for k in batch:
    batch[k][0, :n] = laid[k]
  batch["segment_ids"] = (np.arange(length) < n).astype(np.int32)[None]
  return _full_hidden(mc, params, batch)[0, n - 1]


def _example(mc, seed):
  rng = np.random.default_rng(seed)
  return layout_example([Text(rng.integers(6, mc.text_vocab, 3)),
                         Image(rng.integers(0, mc.codebook_size, mc.code_grid)),
                         Text(rng.integers(6, mc.text_vocab, 4))], mc.fold, SPECIAL, add_eos=False)


@pytest.mark.parametrize("arg", ["", "scan=true", "fold=1x1"])
def test_cached_slots_equal_full_forward_with_left_padding(arg):
  mc, params = _model_and_params(arg)
  long, short = _example(mc, 0), _example(mc, 1)
  short = {k: v[:-3] for k, v in short.items()}           # a shorter prompt in the same batch
  prefill = 5
  batch = left_pad([{k: v[:prefill + 3] for k, v in long.items()},
                    {k: v[:prefill] for k, v in short.items()}], prefill + 3)
  n_long = len(long["text_tokens"])
  model = SynerGenVL(mc, decode=True)
  dec = Decoder(mc, params, SPECIAL)
  cache = dec._llm_cache(params["params"], 2, n_long)
  hidden, v = model.apply({"params": params["params"], "cache": cache}, jax.tree.map(jnp.asarray, batch),
                          method=SynerGenVL.hidden_states, mutable=["cache"])
  got_long, got_short = [hidden[0, -1]], [hidden[1, -1]]
  cache = v["cache"]
  # Then one slot at a time; the short row's next slots come from its own example.
  for t in range(prefill + 3, n_long):
    s = t - 3
    step = {k: np.stack([long[k][t:t + 1], short[k][s:s + 1] if s < len(short[k]) else
                         short[k][:1]]) for k in ("text_tokens", "image_codes", "window_ids",
                                                  "modality", "positions")}
    step["segment_ids"] = np.ones((2, 1), np.int32)
    hidden, v = model.apply({"params": params["params"], "cache": v["cache"]},
                            jax.tree.map(jnp.asarray, step), method=SynerGenVL.hidden_states,
                            mutable=["cache"])
    got_long.append(hidden[0, -1])
    if s < len(short["text_tokens"]):
      got_short.append(hidden[1, -1])
  full_long = _full_hidden(mc, params, {k: v[None] for k, v in long.items()} |
                           {"segment_ids": np.ones((1, n_long), np.int32)})[0]
  n_short = len(short["text_tokens"])
  full_short = _full_hidden(mc, params, {k: v[None] for k, v in short.items()} |
                            {"segment_ids": np.ones((1, n_short), np.int32)})[0]
  np.testing.assert_allclose(np.stack(got_long), full_long[prefill + 2:], atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(np.stack(got_short), full_short[prefill - 1:], atol=2e-5, rtol=1e-4)


def test_cached_unfold_head_equals_teacher_forced():
  mc, params = _model_and_params("fold=2x4")
  rng = np.random.default_rng(3)
  hidden = jnp.asarray(rng.normal(size=(3, mc.llm.d_model)), jnp.float32)
  codes = jnp.asarray(rng.integers(0, mc.codebook_size, (3, mc.fold_ratio)), jnp.int32)
  full = SynerGenVL(mc).apply(params, hidden, codes, method=SynerGenVL.image_logits)
  model, dec = SynerGenVL(mc, decode=True), Decoder(mc, params, SPECIAL)
  cache = dec._unfold_cache(params["params"], 3)
  logits, v = model.apply({"params": params["params"], "cache": cache}, hidden,
                          method=SynerGenVL.unfold_first, mutable=["cache"])
  steps = [logits]
  for j in range(1, mc.fold_ratio):
    logits, v = model.apply({"params": params["params"], "cache": v["cache"]}, codes[:, j - 1], j,
                            method=SynerGenVL.unfold_next, mutable=["cache"])
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=2e-5, rtol=1e-4)


def _last_text_logits(mc, params, laid):
  model = SynerGenVL(mc)
  return model.apply(params, _last_hidden(mc, params, laid)[None], method=SynerGenVL.text_logits)[0]


def _append_text(mc, laid, token):
  r = mc.fold_ratio
  return dict(text_tokens=np.append(laid["text_tokens"], token),
              image_codes=np.concatenate([laid["image_codes"], np.zeros((1, r), np.int32)]),
              window_ids=np.append(laid["window_ids"], 0), modality=np.append(laid["modality"], 0),
              positions=np.arange(len(laid["text_tokens"]) + 1, dtype=np.int32))


def test_greedy_text_equals_recomputing_the_forward_for_batched_prompts():
  mc, params = _model_and_params()
  rng = np.random.default_rng(4)
  prompts = [caption_prompt([rng.integers(0, mc.codebook_size, mc.code_grid)], [7, 8, 9], mc.fold,
                            SPECIAL),
             layout_example([Text([10, 11])], mc.fold, SPECIAL, add_eos=False)]
  stop = 17
  got = Decoder(mc, params, SPECIAL).generate_text(prompts, 6, stop_tokens=(stop,))
  for laid, ids in zip(prompts, got):
    want = []
    for _ in range(6):
      token = int(np.argmax(_last_text_logits(mc, params, laid)))
      if token == stop:
        break
      want.append(token)
      laid = _append_text(mc, laid, token)
    assert ids == want


def test_guided_greedy_images_equal_recomputing_the_forward():
  """CFG with temperature 0: every code is argmax(l_u + s (l_c - l_u)) of full recomputed forwards."""
  mc, params = _model_and_params()
  scale, prompt, uncond = 3.0, [20, 21, 22], [SPECIAL.uncond]
  got = Decoder(mc, params, SPECIAL).generate_images([prompt], uncond_prompt=uncond, cfg_scale=scale,
                                                     sampling=GREEDY)
  model = SynerGenVL(mc)
  streams = [generation_prompt(prompt, mc.fold, SPECIAL), generation_prompt(uncond, mc.fold, SPECIAL)]
  windows = []
  for w in range(mc.windows_per_image):
    hs = [_last_hidden(mc, params, laid) for laid in streams]
    codes = np.zeros(mc.fold_ratio, np.int32)
    for j in range(mc.fold_ratio):
      logits = model.apply(params, jnp.stack(hs), jnp.asarray(np.stack([codes, codes])),
                           method=SynerGenVL.image_logits)[:, j]
      codes[j] = int(np.argmax(logits[1] + scale * (logits[0] - logits[1])))
    windows.append(codes)
    streams = [dict(text_tokens=np.append(s["text_tokens"], SPECIAL.pad),
                    image_codes=np.concatenate([s["image_codes"], codes[None]]),
                    window_ids=np.append(s["window_ids"], w), modality=np.append(s["modality"], 1),
                    positions=np.arange(len(s["text_tokens"]) + 1, dtype=np.int32)) for s in streams]
  from synergen_jax.core.batch import windows_to_grid
  want = windows_to_grid(np.stack(windows)[None], mc.code_grid, mc.fold)
  np.testing.assert_array_equal(got, want)


def test_left_pad_rejects_prompts_longer_than_the_row():
  _, mc = tiny()
  laid = layout_example([Text([9] * 6)], mc.fold, SPECIAL, add_eos=False)
  with pytest.raises(ValueError, match="does not fit 4"):
    left_pad([laid], 4)


def test_top_k_and_top_p_keep_only_the_allowed_tokens_and_follow_softmax():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 4000))
  keys = jax.random.key(0)
  top2 = np.asarray(sample_logits(logits, keys, Sampling(top_k=2)))
  assert set(np.unique(top2)) == {0, 1}
  np.testing.assert_allclose(np.mean(top2 == 0), 0.5 / 0.8, atol=0.03)
  # top_p=0.7: the prefix {0.5, 0.3} is the smallest one reaching 0.7.
  nucleus = np.asarray(sample_logits(logits, jax.random.key(1), Sampling(top_p=0.7)))
  assert set(np.unique(nucleus)) == {0, 1}
  plain = np.asarray(sample_logits(logits, jax.random.key(2), Sampling()))
  np.testing.assert_allclose(np.bincount(plain, minlength=4) / len(plain), [0.5, 0.3, 0.15, 0.05],
                             atol=0.03)
  np.testing.assert_array_equal(sample_logits(logits[:3], keys, GREEDY), [0, 0, 0])
  with pytest.raises(ValueError, match="top_p"):
    Sampling(top_p=0.0)


@pytest.mark.parametrize("top_k", [0, 5])
def test_per_row_settings_sample_what_each_rows_own_sampling_does(top_k):
  """sample_rows (the server's one program for every temperature and top-p) gives each row the id
  sample_logits gives it with that row's own Sampling and key, greedy rows included."""
  settings = [(1.0, 1.0), (0.7, 1.0), (0.0, 1.0), (1.3, 0.9), (0.7, 0.6), (0.0, 0.5)] * 6
  logits = jax.random.normal(jax.random.key(3), (len(settings), 50)) * 3
  keys = row_keys(range(len(settings)))
  got = np.asarray(sample_rows(logits, keys, jnp.asarray([t for t, _ in settings]),
                               jnp.asarray([p for _, p in settings]), top_k))
  want = [int(sample_logits(logits[i:i + 1], keys[i:i + 1], Sampling(t, top_k, p))[0])
          for i, (t, p) in enumerate(settings)]
  np.testing.assert_array_equal(got, want)
  # the rows differ in their settings, so one shared setting would not give these ids
  ones = jnp.ones(len(settings))
  shared = np.asarray(sample_rows(logits, keys, ones, ones, top_k))
  assert (shared != got).any()


def test_decoding_under_a_mesh_matches_one_device():
  """Parameters sharded over (data 2, fsdp 2, tensor 2) by the rules table: same tokens and codes."""
  from synergen_jax.parallel.mesh import make_mesh
  from synergen_jax.parallel.sharding import mesh_shardings
  mc, params = _model_and_params()
  mesh = make_mesh(dict(data=2, fsdp=2, tensor=2))
  example = random_batch(mc, rows=1, seq_len=32, seed=1)
  boxed = jax.eval_shape(SynerGenVL(mc).init, jax.random.key(0), example)
  sharded = jax.device_put(params, mesh_shardings(boxed, mesh))
  rng = np.random.default_rng(5)
  prompts = [caption_prompt([rng.integers(0, mc.codebook_size, mc.code_grid)], [7, 8], mc.fold,
                            SPECIAL) for _ in range(4)]
  one, many = Decoder(mc, params, SPECIAL), Decoder(mc, sharded, SPECIAL, mesh)
  assert many.generate_text(prompts, 5) == one.generate_text(prompts, 5)
  args = dict(uncond_prompt=[SPECIAL.uncond], cfg_scale=2.0, sampling=GREEDY)
  np.testing.assert_array_equal(many.generate_images([[20, 21], [22]], **args),
                                one.generate_images([[20, 21], [22]], **args))
