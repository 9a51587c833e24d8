"""Full export (convert/full_export.py): the PyTorch SynerGen-VL gives our logits (float32, relative
1e-4) at folds 1x1, 2x2 and 2x4 for caption and generation prompts, our greedy text and greedy image
codes after loading with transformers' Auto classes, a bfloat16 export within a measured bound; bad
input fails before anything is written, and a failed export leaves nothing behind."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import init_params, tiny  # noqa: E402
from synergen_jax.convert import full_export  # noqa: E402
from synergen_jax.core import batch as batch_lib  # noqa: E402
from synergen_jax.core.errors import ConfigError, DataError  # noqa: E402
from synergen_jax.data.layout import Image, SpecialTokens, Text, layout_example  # noqa: E402
from synergen_jax.infer import loader  # noqa: E402
from synergen_jax.infer.decode import GREEDY, left_pad  # noqa: E402
from synergen_jax.model.synergen_vl import SynerGenVL  # noqa: E402

SPECIAL = SpecialTokens()


def _torch_model(mc, config, params):
  """The PyTorch model built from the export's config and tensors, without files in between."""
  import importlib.util
  import sys
  folder = full_export.REMOTE_DIR
  package = "synergen_export_test"
  if package not in sys.modules:
    spec = importlib.util.spec_from_file_location(package, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    sys.modules[package] = importlib.util.module_from_spec(spec)
  conf = importlib.import_module(f"{package}.configuration_synergen_vl")
  modeling = importlib.import_module(f"{package}.modeling_synergen_vl")
  c = full_export.hf_config(mc, config, SPECIAL.__dict__, "float32")
  model = modeling.SynerGenVLForCausalLM(conf.SynerGenVLConfig(**c)).eval()
  state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in full_export.model_tensors(mc, params)}
  missing, unexpected = model.load_state_dict(state, strict=False)
  assert not unexpected and not missing
  return model


import importlib  # noqa: E402


def _prompts(mc, rng):
  """A caption prompt (image, question, answer) and a generation prompt (text, <boi>, an image),
  of different lengths, left-padded together."""
  grid = lambda: rng.integers(0, mc.codebook_size, mc.code_grid)
  text = lambda n: list(rng.integers(6, mc.text_vocab, n))
  caption = layout_example([Image(grid()), Text(text(3)), Text(text(2))], mc.fold, SPECIAL,
                           add_eos=False)
  generation = layout_example([Text(text(5)), Image(grid())], mc.fold, SPECIAL, add_eos=False)
  return left_pad([caption, generation])


def _ours(mc, params, batch):
  model = SynerGenVL(mc)
  b = jax.tree.map(jnp.asarray, batch)
  # Jitted: one compile instead of an eager dispatch per op (most of this test's time on 2 cores).
  hidden = jax.jit(lambda p, b: model.apply(p, b, method=SynerGenVL.hidden_states))(params, b)
  text = jax.jit(lambda p, h: model.apply(p, h, method=SynerGenVL.text_logits))(params, hidden)
  return np.asarray(hidden), np.asarray(text)


def _theirs(model, batch):
  t = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()}
  with torch.no_grad():
    out = model(input_ids=t["text_tokens"], image_codes=t["image_codes"],
                window_ids=t["window_ids"], modality=t["modality"],
                attention_mask=t["segment_ids"], position_ids=t["positions"])
  return out.hidden_states[0], out.logits.numpy()


def _close(ours, theirs, rel=1e-4):
  scale = np.abs(ours).max()
  np.testing.assert_allclose(theirs, ours, rtol=rel, atol=rel * scale)


def _perturbed(params, seed=1):
  """Every parameter moved off its init (the vision experts start as copies of the text experts;
  routing would go untested)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("arg", ["fold=1x1", "fold=2x2", "fold=2x4,scan=true"])
def test_logits_equal_ours_at_each_fold(arg):
  config, mc = tiny(arg)
  rng = np.random.default_rng(0)
  batch = _prompts(mc, rng)
  params = _perturbed(init_params(mc, batch_lib.zeros(1, 8, mc.fold_ratio, jnp)))
  model = _torch_model(mc, config, params)
  hidden, text = _ours(mc, params, batch)
  h, logits = _theirs(model, batch)
  real = batch["segment_ids"] > 0
  _close(text[real], logits[real])
  # The image head, teacher-forced over every window of both prompts' images.
  nxt = np.concatenate([batch["modality"][:, 1:], np.zeros_like(batch["modality"][:, :1])], axis=1)
  image_slots = np.nonzero(nxt == 1)
  codes = np.stack([batch["image_codes"][b, t + 1] for b, t in zip(*image_slots)])
  image_logits = jax.jit(lambda p, h, c: SynerGenVL(mc).apply(p, h, c,
                                                               method=SynerGenVL.image_logits))
  ours = np.asarray(image_logits(params, jnp.asarray(hidden[image_slots]), jnp.asarray(codes)))
  with torch.no_grad():
    theirs = model.unfold_head(h[image_slots], torch.from_numpy(codes[:, :-1]).long()).numpy()
  _close(ours, theirs)


@pytest.fixture(scope="module")
def exported(tiny_workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("export") / "full")
  record = full_export.export_full(tiny_workdir, out)
  return out, record


def test_auto_classes_load_the_export_and_decode_greedily_as_we_do(tiny_workdir, exported):
  out, record = exported
  assert json.loads(open(os.path.join(out, full_export.MARKER)).read()) == record
  model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
  loaded = loader.load(tiny_workdir)
  from synergen_jax.infer import tasks
  pixels = np.full((16, 16, 3), 255, np.uint8)
  pixels[4:12, 6:10] = 0
  codes = tasks.image_codes(loaded, pixels)
  prompt = tasks.answer_prompt(loaded, codes, None, chat=False)
  ours = loaded.decoder.generate_text([prompt], 12, sampling=GREEDY)[0]
  batch = left_pad([prompt])
  t = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()}
  generated = model.generate(input_ids=t["text_tokens"], image_codes=t["image_codes"],
                             window_ids=t["window_ids"], modality=t["modality"],
                             attention_mask=t["segment_ids"], max_new_tokens=12, do_sample=False,
                             eos_token_id=loaded.special.eos, pad_token_id=loaded.special.pad)
  theirs = generated[0, batch["text_tokens"].shape[1]:].tolist()
  cut = theirs.index(loaded.special.eos) if loaded.special.eos in theirs else len(theirs)
  assert theirs[:cut] == ours
  # Greedy image codes with classifier-free guidance.
  d = loaded.config.data
  prompt_ids = loaded.encode_text(d.generation_prompt) + loaded.encode_text("seven")
  uncond = loaded.encode_text(d.uncond_prompt)
  ours = loaded.decoder.generate_images([prompt_ids], uncond_prompt=uncond, cfg_scale=3.0,
                                        sampling=GREEDY)
  ids = lambda p: torch.tensor([[loaded.special.bos, *p, loaded.special.boi]])
  theirs = model.generate_images(ids(prompt_ids), uncond_input_ids=ids(uncond), cfg_scale=3.0,
                                 temperature=0.0)
  np.testing.assert_array_equal(theirs.numpy(), np.asarray(ours))


def test_bad_input_fails_before_writing(tiny_workdir, exported, tmp_path, monkeypatch):
  out, _ = exported
  with pytest.raises(ConfigError, match="not empty"):
    full_export.export_full(tiny_workdir, out)
  # A workdir whose config names no image tokenizer (and no prepared data).
  bare = tmp_path / "bare"
  bare.mkdir()
  config = json.loads(open(os.path.join(tiny_workdir, "config.json")).read())
  config["data"]["path"] = ""
  config["vq"]["workdir"] = ""
  (bare / "config.json").write_text(json.dumps(config))
  with pytest.raises(DataError, match="text tokenizer|image tokenizer"):
    full_export.export_full(str(bare), str(tmp_path / "never"))
  assert not (tmp_path / "never").exists()
  # A failure while writing leaves neither the folder nor its temporary sibling.
  def broken(*args):
    raise OSError("disk full")
  monkeypatch.setattr(full_export, "_image_tokenizer_files", broken)
  with pytest.raises(OSError, match="disk full"):
    full_export.export_full(tiny_workdir, str(tmp_path / "half"))
  assert sorted(os.listdir(tmp_path)) == ["bare"]
