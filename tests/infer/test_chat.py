"""Chat prompts (infer/chat.py): OpenAI-style messages rendered token for token as prepare renders
the same conversation for training, up to the answer; bad messages fail with a clear error."""

import dataclasses
import io
import json
import os
import pathlib

import numpy as np
import pytest
from grain.sources import ArrayRecordDataSource
from PIL import Image as PILImage

from synergen_jax.core.errors import DataError
from synergen_jax.data import images as image_ops
from synergen_jax.data.layout import layout_example
from synergen_jax.data.records import decode_record, record_parts
from synergen_jax.data.tokenizers import TextTokenizer
from synergen_jax.infer import chat, jobs, tasks
from synergen_jax.infer.decode import caption_prompt
from synergen_jax.infer.loader import Loaded
from synergen_jax.prepare.writer import prepare


def _png(seed, size=(20, 24)):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
  buf = io.BytesIO()
  PILImage.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


CONVERSATION = {"images": ["a.png", "b.png"], "conversations": [
    {"from": "system", "value": "You are a careful describer."},
    {"from": "human", "value": "<image>\nand <image>\nwhat differs?"},
    {"from": "gpt", "value": "the colours of the noise"},
    {"from": "human", "value": "which is brighter?"},
    {"from": "gpt", "value": "the second one"}]}


def chat_loaded(tiny_data, root, records=(CONVERSATION,)):
  """A Loaded over conversation data prepared with tiny_data's image tokenizer (no parameters:
  rendering needs none)."""
  (root / "a.png").write_bytes(_png(1))
  (root / "b.png").write_bytes(_png(2))
  (root / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in records))
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="chat", path=str(root / "chat.jsonl"), eval_count=0)
  out = str(root / "prepared")
  meta = prepare(config, out, tiny_data["image_tokenizer"])
  config.data.path, config.vq.workdir = out, tiny_data["vq_dir"]
  tok = TextTokenizer.load(os.path.join(out, "tokenizer.model"), config.data.reserved_tokens)
  return Loaded(str(root), config, tiny_data["mc"], None, 0, meta, tok)


@pytest.fixture(scope="module")
def loaded(tiny_data, tmp_path_factory):
  return chat_loaded(tiny_data, tmp_path_factory.mktemp("chat"))


def _training_parts(loaded):
  meta = loaded.meta
  source = ArrayRecordDataSource([os.path.join(loaded.config.data.path, f)
                                  for f in meta["splits"]["train"]["shards"]])
  (record,) = [decode_record(source[i]) for i in range(len(source))]
  # The record ends with an empty text part (the "\n" after the last <|im_end|> encodes to no id);
  # layout_example refuses empty parts, so they are left out as the training pipeline must.
  return [p for p in record_parts(record) if not hasattr(p, "tokens") or len(p.tokens)]


def _pixels(root, name):
  return image_ops.decode(str(root / name))


def _assert_same(prompt, expected):
  for k in ("text_tokens", "image_codes", "window_ids", "modality", "positions"):
    np.testing.assert_array_equal(prompt[k], expected[k], err_msg=k)


def test_prompt_is_the_training_prefix_up_to_each_answer(loaded):
  root = pathlib.Path(loaded.config.data.path).parent
  parts = _training_parts(loaded)
  answers = [k for k, p in enumerate(parts) if p.loss]
  assert len(answers) == 2
  a, b = _pixels(root, "a.png"), _pixels(root, "b.png")
  first_turn = [
      {"role": "system", "content": "You are a careful describer."},
      {"role": "user", "content": [{"type": "image", "pixels": a}, {"type": "text", "text": "\nand "},
                                   {"type": "image", "pixels": b},
                                   {"type": "text", "text": "\nwhat differs?"}]}]
  expected = layout_example(parts[:answers[0]], loaded.mc.fold, loaded.special, add_eos=False)
  _assert_same(chat.messages_prompt(loaded, first_turn), expected)
  # The second question: the first answer (and its <|im_end|>) is part of the prompt.
  second_turn = first_turn + [{"role": "assistant", "content": "the colours of the noise"},
                              {"role": "user", "content": "which is brighter?"}]
  expected = layout_example(parts[:answers[1]], loaded.mc.fold, loaded.special, add_eos=False)
  prompt = chat.messages_prompt(loaded, second_turn)
  _assert_same(prompt, expected)
  # ... which is the full training example's prefix (same slots, positions and windows).
  full = layout_example(parts, loaded.mc.fold, loaded.special)
  n = len(prompt["text_tokens"])
  _assert_same(prompt, {k: v[:n] for k, v in full.items()})
  tok = loaded.tokenizer()
  ids = list(prompt["text_tokens"])
  header = len(ids) - 1 - ids[::-1].index(tok.pieces["<|im_start|>"])
  assert tok.decode(ids[header + 1:]).strip() == "assistant"     # ends with the assistant header


def test_stop_ids_and_the_recorded_format(loaded, tiny_data, tmp_path):
  tok = loaded.tokenizer()
  assert chat.stop_ids(loaded) == [tok.special.eos, tok.pieces["<|im_end|>"]]
  assert chat.trained_on_chat(loaded)
  # tiny_data (captions / generation / interleaved) holds no conversation.
  plain = Loaded("w", tiny_data["config"], tiny_data["mc"], None, 0, tiny_data["meta"], None)
  assert not chat.trained_on_chat(plain)


@pytest.mark.parametrize("messages, message", [
    ([], "non-empty list"),
    ([{"role": "robot", "content": "hi"}], "role 'robot'"),
    ([{"role": "user", "content": 3}], "content must be a string"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "part type 'audio'"),
    ([{"role": "user", "content": [{"type": "image"}]}], "needs \"pixels\""),
    ([{"role": "user", "content": [{"type": "image", "pixels": np.zeros((4, 4), np.float32)}]}],
     "uint8 [H, W, 3]"),
    ([{"role": "user", "content": "see <image>"}], "<image>"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "assistant",
      "content": [{"type": "image", "pixels": np.zeros((4, 4, 3), np.uint8)}]},
      {"role": "user", "content": "b"}], "user turns only"),
])
def test_bad_messages_fail_clearly(loaded, messages, message):
  with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")
                     .replace("(", r"\(")):
    chat.messages_prompt(loaded, messages)


class _RecordingDecoder:
  """Stands in for Decoder.generate_text: records the prompts and stop ids it is given and answers
  with fixed ids."""

  def __init__(self, answer):
    self.answer, self.calls = answer, []

  def generate_text(self, prompts, max_new_tokens, *, stop_tokens=None, **kwargs):
    self.calls.append((prompts, stop_tokens, kwargs.get("pad_to")))
    return [list(self.answer) for _ in prompts]


def _with_decoder(loaded, answer):
  fresh = dataclasses.replace(loaded)
  fresh.__dict__["decoder"] = _RecordingDecoder(answer)
  return fresh


def test_caption_and_jobs_ask_a_chat_run_through_its_template(loaded, tmp_path):
  tok = loaded.tokenizer()
  root = pathlib.Path(loaded.config.data.path).parent
  pixels = _pixels(root, "a.png")
  codes = tasks.image_codes(loaded, pixels)
  run = _with_decoder(loaded, tok.encode("two digits"))
  assert tasks.caption(run, [codes], question="what is it?") == ["two digits"]
  (prompts, stops, _), = run.decoder.calls
  expected = chat.messages_prompt(loaded, [{"role": "user", "content": [
      {"type": "image", "pixels": pixels}, {"type": "text", "text": "what is it?"}]}])
  _assert_same(prompts[0], expected)
  assert stops == chat.stop_ids(loaded)
  # --chat=false: the plain caption layout, stopping at </s> only.
  tasks.caption(run, [codes], question=None, chat=False)
  (prompts, stops, _) = run.decoder.calls[-1]
  plain = caption_prompt(codes, tok.encode(loaded.config.data.caption_prompt), loaded.mc.fold,
                         loaded.special)
  _assert_same(prompts[0], plain)
  assert stops is None
  # A batch job of answer records: the chat prompt, padded to what the longest question needs.
  (tmp_path / "q.jsonl").write_text(json.dumps({"image": str(root / "a.png"), "question": "what?"}))
  job = _with_decoder(loaded, tok.encode("a"))
  jobs.run_job(job, str(tmp_path / "q.jsonl"), str(tmp_path / "out"),
               jobs.JobSettings(batch_size=1), log=lambda _: None)
  (prompts, stops, pad_to), = job.decoder.calls
  assert stops == chat.stop_ids(loaded)
  _assert_same(prompts[0], tasks.answer_prompt(loaded, codes, "what?", True))
  assert pad_to == tasks.caption_pad_to(loaded, ["what?"], chat=True) >= len(prompts[0]["text_tokens"])
