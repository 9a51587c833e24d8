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

from helpers import init_params, remote_module, tiny  # noqa: E402
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
  conf = remote_module("configuration_synergen_vl")
  modeling = remote_module("modeling_synergen_vl")
  c = full_export.hf_config(mc, config, SPECIAL.__dict__, "float32")
  model = modeling.SynerGenVLForCausalLM(conf.SynerGenVLConfig(**c)).eval()
  state = {k: torch.from_numpy(np.array(v)) for k, v in full_export.model_tensors(mc, params)}
  missing, unexpected = model.load_state_dict(state, strict=False)
  assert not unexpected and not missing
  return model


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


@pytest.mark.parametrize("arg", ["fold=1x1", "fold=2x2", "fold=2x4,scan=true",
                                 "demo:fold=1x1", "demo:fold=2x2", "demo:fold=2x4"])
def test_logits_equal_ours_at_each_fold(arg):
  """The tiny and the demo model (4 layers, d_model 256, 8x8 codes) at folds 1x1, 2x2 and 2x4."""
  if arg.startswith("demo:"):
    from helpers import config_path
    from synergen_jax.core.config import load_config, validate_config
    config = load_config(config_path("demo.py") + ":" + arg[5:])
    mc = validate_config(config)
  else:
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


# -- the processor, the image tokenizer in PyTorch, the text tokenizer, bfloat16, the round trip --

BF16_BOUND = 0.02      # max |bf16 export - float32| / max |float32| logits (measured 0.004; docs/export.md)


@pytest.fixture(scope="module")
def hf(tiny_workdir, exported):
  """The export loaded with the Auto classes, and our loaded workdir."""
  out, _ = exported
  torch.set_num_threads(1)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
  processor = transformers.AutoProcessor.from_pretrained(out, trust_remote_code=True)
  return model, processor, loader.load(tiny_workdir)


def _digit_image():
  pixels = np.full((20, 12, 3), 255, np.uint8)     # not the tokenizer's size: fitted as prepare fits
  pixels[4:16, 5:8] = 0
  return pixels


def test_processor_captions_and_draws_as_we_do(hf):
  from synergen_jax.infer import tasks
  model, processor, loaded = hf
  pixels = _digit_image()
  codes = tasks.image_codes(loaded, pixels)
  inputs = processor(images=pixels, text="", return_tensors="pt")
  # The prompt slot for slot: ours (tasks.answer_prompt, the caption prompt) left-padded.
  want = left_pad([tasks.answer_prompt(loaded, codes, None, chat=False)])
  for ours, theirs in (("text_tokens", "input_ids"), ("image_codes", "image_codes"),
                       ("window_ids", "window_ids"), ("modality", "modality"),
                       ("segment_ids", "attention_mask")):
    np.testing.assert_array_equal(inputs[theirs].numpy(), want[ours], err_msg=theirs)
  ours = tasks.caption(loaded, [codes], max_new_tokens=12, sampling=GREEDY)[0]
  ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
  assert processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:])[0] == ours
  # Drawing: the processor's prompts (the caption prompt's text, and the unconditional one).
  ours = tasks.generate_codes(loaded, ["seven", "a one"], cfg_scale=3.0, sampling=GREEDY)
  inputs = processor(text=["seven", "a one"], generate_image=True, return_tensors="pt")
  theirs = model.generate_images(**inputs, cfg_scale=3.0, temperature=0.0)
  np.testing.assert_array_equal(theirs.numpy(), ours)


def test_generate_reuses_its_kv_cache(hf):
  """One slot per step after the prompt: generate() keeps the cache forward() fills."""
  model, processor, _ = hf
  inputs = processor(images=_digit_image(), text="", return_tensors="pt")
  seen, forward = [], model.forward
  model.forward = lambda *a, **k: seen.append(k["input_ids"].shape[1]) or forward(*a, **k)
  try:
    model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
  finally:
    del model.forward
  assert seen == [inputs["input_ids"].shape[1], 1, 1, 1]


def test_image_tokenizer_port_encodes_and_decodes_as_ours(hf, tiny_data):
  _, processor, _ = hf
  tok = tiny_data["image_tokenizer"]
  assert processor.image_tokenizer.family == "synergen"
  rng = np.random.default_rng(3)
  noise = rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8)
  strokes = np.full((8, 16, 16, 1), 255, np.uint8)
  for i in range(8):
    strokes[i, 2 + i % 4:14, 4 + i:7 + i] = 0
  pixels = np.concatenate([noise, strokes])
  codes = tok.encode(pixels)
  np.testing.assert_array_equal(processor.image_tokenizer.encode(pixels).numpy(), codes)
  diff = processor.decode_images(codes).astype(int) - tok.decode(codes).astype(int)
  assert np.abs(diff).max() <= 1


def test_auto_tokenizer_gives_our_ids(hf, exported):
  _, _, loaded = hf
  tok = transformers.AutoTokenizer.from_pretrained(exported[0], trust_remote_code=True)
  ours = loaded.tokenizer()
  texts = ["a photo of the digit seven", "Here is a random image <UNCOND>:", "seven <boi> x<eoi>",
           " two  words\nnew line ", "<s>seven</s>"]
  for text in texts:
    assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text), text
  assert tok("seven")["input_ids"] == [loaded.special.bos] + ours.encode("seven")


def test_bfloat16_export_within_the_stated_bound(tiny_workdir, hf, tmp_path):
  model32, processor, _ = hf
  full_export.export_full(tiny_workdir, str(tmp_path / "bf16"), dtype="bfloat16")
  model16 = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "bf16"), trust_remote_code=True, dtype=torch.bfloat16).eval()
  assert model16.text_embed.embedding.dtype == torch.bfloat16
  inputs = processor(images=_digit_image(), text="seven", return_tensors="pt")
  with torch.no_grad():
    ours, theirs = model32(**inputs).logits.numpy(), model16(**inputs).logits.float().numpy()
  rel = np.abs(theirs - ours).max() / np.abs(ours).max()
  print(f"bfloat16 export: max relative logit difference {rel:.4f}")
  assert rel <= BF16_BOUND


def test_text_path_round_trips_through_hf_import_bit_for_bit(tiny_workdir, tmp_path):
  """Export (text path) then hf_import: the same text-path tensors as the PyTorch model names them
  (the new tokens' rows live in their own parameters here and in the tables after the import)."""
  from synergen_jax.convert.exporter import export_checkpoint
  from synergen_jax.convert.importer import import_checkpoint
  from synergen_jax.core.config import validate_config
  from synergen_jax.train.checkpoint import read_config, restore_on_device
  export_checkpoint(tiny_workdir, str(tmp_path / "llm"), dtype="float32")
  import_checkpoint(str(tmp_path / "llm"), str(tmp_path / "back"), read_config(tiny_workdir))

  def tensors(workdir):
    mc = validate_config(read_config(workdir))
    return dict(full_export.model_tensors(mc, restore_on_device(workdir, mc)[0]))

  ours, back = tensors(tiny_workdir), tensors(str(tmp_path / "back"))
  text_path = [k for k in ours if not any(s in k for s in ("vision", "fold", "unfold"))]
  assert {"text_embed.embedding", "lm_head.kernel"} <= set(text_path)
  assert any("text_gate" in k for k in text_path)
  for k in text_path:
    np.testing.assert_array_equal(back[k], ours[k], err_msg=k)


def test_a_chat_trained_run_answers_through_its_template_in_both_frameworks(tiny_data, tmp_path):
  """A tiny run trained on conversations (its tokenizer has the chat pieces): the export's
  processor lays out the question through the chat template slot for slot as we do, and greedy
  answers, stopped at <|im_end|>, are the same ids in both frameworks."""
  from PIL import Image as PILImage

  from synergen_jax.infer import chat as chat_lib
  from synergen_jax.infer import tasks
  from synergen_jax.prepare.writer import prepare
  from synergen_jax.train.loop import train

  rng = np.random.default_rng(0)
  records = []
  for k in range(24):
    PILImage.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    records.append(json.dumps({"image": f"{k}.png", "conversations": [
        {"from": "human", "value": "<image>\nwhat is it?"},
        {"from": "gpt", "value": f"noise number {k % 4}"}]}))
  (tmp_path / "chat.jsonl").write_text("\n".join(records) + "\n")
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="chat", path=str(tmp_path / "chat.jsonl"), eval_count=0, tokenizer=None)
  config.vq.workdir = tiny_data["vq_dir"]
  config.stage = "sft"
  prepare(config, str(tmp_path / "prepared"), tiny_data["image_tokenizer"])
  config.data.path = str(tmp_path / "prepared")
  config.data.seq_len = 48
  config.train.update(steps=4, log_every=2)
  config.optim.update(learning_rate=1e-2, warmup_steps=0, schedule="constant")
  workdir = str(tmp_path / "run")
  train(config, workdir)
  out = str(tmp_path / "export")
  full_export.export_full(workdir, out)
  loaded = loader.load(workdir)
  assert chat_lib.trained_on_chat(loaded)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
  processor = transformers.AutoProcessor.from_pretrained(out, trust_remote_code=True)
  pixels = np.asarray(PILImage.open(tmp_path / "3.png").convert("RGB"))
  codes = tasks.image_codes(loaded, pixels)
  inputs = processor(images=pixels, text="what is it?", return_tensors="pt")
  want = left_pad([tasks.answer_prompt(loaded, codes, "what is it?", chat=True)])
  np.testing.assert_array_equal(inputs["input_ids"].numpy(), want["text_tokens"])
  np.testing.assert_array_equal(inputs["image_codes"].numpy(), want["image_codes"])
  ours = tasks.caption(loaded, [codes], question="what is it?", max_new_tokens=6, sampling=GREEDY)[0]
  new = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
  new = new.tolist()
  stops = chat_lib.stop_ids(loaded)
  # generate() stops at <|im_end|> too (generation_config's end tokens) and keeps it, as HF does.
  answer = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
  assert len(answer) < len(new) and new[len(answer)] == loaded.tokenizer().pieces["<|im_end|>"]
  assert processor.batch_decode([answer])[0] == ours and ours
