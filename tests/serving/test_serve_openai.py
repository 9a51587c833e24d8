"""The server through the official openai client, as users call it: answers and images equal what
the library computes for the same prompt and seed; streaming, stop strings and the API key."""

import base64
import io

import numpy as np
import openai
import pytest
import requests
from PIL import Image

from synergen_jax.infer import tasks
from synergen_jax.infer.decode import Sampling


def _client(served, key=None):
  return openai.OpenAI(base_url=served.url + "/v1", api_key=key or served.key, max_retries=0)


def _digit_png() -> bytes:
  digit = np.zeros((28, 28), np.uint8)
  digit[5:23, 12:16] = 255                    # a "1"
  out = io.BytesIO()
  Image.fromarray(digit).save(out, format="PNG")
  return out.getvalue()


def data_url(png: bytes) -> str:
  return "data:image/png;base64," + base64.b64encode(png).decode()


def test_chat_with_an_image_equals_the_library_answer(served, tiny_loaded):
  client = _client(served)
  question = "What digit is this?"
  reply = client.chat.completions.create(model=served.model, temperature=0, messages=[{
      "role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(_digit_png())}},
                                  {"type": "text", "text": question}]}])
  # Reference: greedy captioning in this process at the server's shapes (8 rows, the prompt padded
  # to the context less one slot, max_tokens capped by the context).
  loaded = tiny_loaded
  context = loaded.config.data.seq_len
  pixels = np.asarray(Image.open(io.BytesIO(_digit_png())).convert("RGB"))
  want = tasks.caption(loaded, [tasks.image_codes(loaded, pixels)], question=question,
                       max_new_tokens=context - 1, pad_to=context - 1, rows=8)[0]
  assert reply.choices[0].message.content.strip() == want
  assert reply.choices[0].finish_reason == "stop" and reply.model == served.model
  assert reply.usage.prompt_tokens > loaded.mc.windows_per_image      # the image is in the prompt


def test_generated_images_equal_the_library_images_of_their_seeds(served, tiny_loaded):
  client = _client(served)
  result = client.images.generate(model=served.model, prompt="seven", n=2, response_format="b64_json",
                                  extra_body={"seed": 11, "guidance_scale": 2.5})
  got = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json))))
                  for d in result.data])
  loaded = tiny_loaded
  size = loaded.image_tokenizer.image_size
  assert got.shape[1:3] == (size, size)
  # Image k of seed s is the image of seed s + k; the server pads prompts to what the context admits.
  codes = tasks.generate_codes(loaded, ["seven", "seven"], cfg_scale=2.5, seeds=[11, 12], rows=8,
                               sampling=Sampling(temperature=1.0, top_k=20),
                               pad_to=loaded.config.data.seq_len - loaded.mc.windows_per_image)
  want = loaded.image_tokenizer.decode(codes)
  np.testing.assert_array_equal(got.reshape(want.shape), want)
  assert not np.array_equal(got[0], got[1])


def test_streaming_adds_up_to_the_answer_and_stop_strings_cut_it(served):
  client = _client(served)
  ask = dict(model=served.model, messages=[{"role": "user", "content": "seven"}], seed=5,
             temperature=1.0, max_tokens=12)
  whole = client.chat.completions.create(**ask)
  text = whole.choices[0].message.content
  assert len(text) >= 4, text
  chunks = list(client.chat.completions.create(**ask, stream=True))
  assert chunks[0].choices[0].delta.role == "assistant"
  assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
  assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
  # A stop string: the answer ends before its first occurrence, streamed or not.
  stop = text[2:4]
  cut = client.chat.completions.create(**ask, stop=[stop])
  assert cut.choices[0].message.content == text[:text.find(stop)]
  assert cut.choices[0].finish_reason == "stop"
  streamed = client.chat.completions.create(**ask, stop=stop, stream=True)
  assert "".join(c.choices[0].delta.content or "" for c in streamed) == text[:text.find(stop)]


def test_the_api_key_guards_every_route_but_health(served):
  assert requests.get(served.url + "/health", timeout=10).json()["status"] == "ok"
  with pytest.raises(openai.AuthenticationError):
    _client(served, key="wrong").models.list()
  assert [m.id for m in _client(served).models.list().data] == [served.model]
  page = requests.get(served.url + "/", timeout=10)
  assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic")
  # The browser's Basic credentials (any user, the key as password) open the page.
  page = requests.get(served.url + "/", auth=("user", served.key), timeout=10)
  assert page.ok and "<script>" in page.text and "http" not in page.text.split("<script>")[1]
  for route in ("/v1/chat/completions", "/v1/images/generations"):
    refused = requests.post(served.url + route, json={}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
