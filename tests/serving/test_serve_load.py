"""Under load and abuse: 64 concurrent clients get exactly their own seeds' answers (nothing lost,
nothing mixed up, though their temperatures, top-p and guidance differ within a batch), and a few
hundred malformed requests get 4xx errors and leave the server up."""

import asyncio
import base64
import io
import json
import random
import struct
import zlib

import numpy as np
import openai
import requests
from PIL import Image

CLIENTS, SEEDS = 64, 16
PROMPTS = ("zero", "three", "seven", "a nine")


def _image_request(seed):
  return dict(model="tiny", prompt=PROMPTS[seed % 4], n=1, response_format="b64_json",
              extra_body={"seed": seed, "guidance_scale": (3.0, 2.0, 4.5)[seed % 3]})


def _chat_request(seed):
  return dict(model="tiny", messages=[{"role": "user", "content": PROMPTS[seed % 4]}], seed=seed,
              temperature=(1.0, 0.7, 0.0)[seed % 3], top_p=(1.0, 0.8)[seed % 2], max_tokens=8)


async def _both(client, seed):
  image = await client.images.generate(**_image_request(seed))
  chat = await client.chat.completions.create(**_chat_request(seed))
  return image.data[0].b64_json, chat.choices[0].message.content


def test_64_concurrent_clients_get_their_own_seeds_answers(served):
  stats = lambda: requests.get(served.url + "/health", timeout=10).json()

  async def main():
    client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=served.key, max_retries=0,
                                timeout=120)
    # References: each seed alone on the server (its batch holds nothing else).
    alone = [await _both(client, seed) for seed in range(SEEDS)]
    before = stats()
    # Each client asks twice (an image, then a chat answer), all clients at once.
    together = await asyncio.gather(*(_both(client, c % SEEDS) for c in range(CLIENTS)))
    await client.close()
    return alone, before, together

  alone, before, together = asyncio.run(main())
  after = stats()
  assert len(set(alone)) == SEEDS                  # seeds differ, so a mix-up would show
  for c, got in enumerate(together):
    assert got == alone[c % SEEDS], f"client {c} (seed {c % SEEDS}) got another request's answer"
  batches, rows = after["batches"] - before["batches"], after["rows"] - before["rows"]
  assert rows == 2 * CLIENTS and batches <= rows / 3, (batches, rows)    # they shared batches
  assert after["queued"] == 0


def _png(width, height) -> bytes:
  out = io.BytesIO()
  Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(out, format="PNG")
  return out.getvalue()


def _huge_canvas_png() -> bytes:
  """A valid 8x8 PNG whose header claims 60000 x 60000 pixels."""
  data = bytearray(_png(8, 8))
  ihdr = bytearray(data[12:29])                # b"IHDR" + 13 bytes
  ihdr[4:12] = struct.pack(">II", 60000, 60000)
  data[12:29] = ihdr
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
  return bytes(data)


def _image_part(url):
  return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                      {"type": "text", "text": "what?"}]}


def _malformed(port: int):
  """(route, body) pairs, every one of them wrong; bodies are JSON values or raw bytes."""
  chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
  image = {"model": "tiny", "prompt": "seven", "n": 1}
  bad_values = {
      "chat": {
          "messages": [None, "hi", [], {}, [1], [{"role": "robot", "content": "x"}],
                       [{"role": "user"}], [{"role": "user", "content": 5}],
                       [{"role": "user", "content": []}], [{"role": "user", "content": "x", "extra": 1}],
                       [{"role": "user", "content": [{"type": "video", "url": "x"}]}],
                       [{"role": "user", "content": [{"type": "text"}]}],
                       [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}],
                       [{"role": "assistant", "content": "only me"}]],
          "max_tokens": [0, -1, 10**6, 2.5, "2", True, [], {}],
          "temperature": [-0.1, 2.5, "hot", True, [], 1e300],
          "top_p": [0, -1, 1.5, "x", False],
          "top_k": [-1, 0.5, "x"],
          "seed": [-1, 2**32, 1.5, "7", True, []],
          "stop": [5, ["a", 1], ["a"] * 5, [""], {}, True],
          "stream": ["yes", 1, [], {}],
          "stream_options": [5, {"x": 1}, {"include_usage": "yes"}],
          "n": [2, 0, "1"], "logprobs": [True], "presence_penalty": [1.0],
          "model": [5, "gpt-4o", []], "not_a_field": [1, "x"]},
      "image": {
          "prompt": [None, "", "   ", 5, ["seven"], "seven " * 400],
          "n": [0, -1, 9, 2.0, "2", True],
          "seed": [-5, 2**33, "1"],
          "guidance_scale": [0.5, 21, -1, "big", True],
          "response_format": ["url", 5, "png"],
          "size": ["512x512", "16", 16],
          "model": ["dall-e-3", 7], "style": [5], "quality": [[]], "unknown": [0]}}
  cases = []
  for route, base, name in (("/v1/chat/completions", chat, "chat"),
                            ("/v1/images/generations", image, "image")):
    for field, values in bad_values[name].items():
      for value in values:
        cases.append((route, dict(base, **{field: value})))
    del_field = "messages" if name == "chat" else "prompt"
    cases.append((route, {k: v for k, v in base.items() if k != del_field}))
    for raw in (b"", b"{", b"[]", b"null", b"1", b'"x"', b"\xff\xfe{}", b"[" * 100000 + b"]" * 100000,
                b'{"messages": NaN}', json.dumps(base).encode()[:-1]):
      cases.append((route, raw))
  rng = random.Random(0)
  for _ in range(130):                         # random bytes, random objects with unknown keys
    route = rng.choice(["/v1/chat/completions", "/v1/images/generations"])
    if rng.random() < 0.5:
      cases.append((route, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))))
    else:
      cases.append((route, {f"k{rng.randrange(10**6)}": rng.choice([1, "x", None, [], {}])
                            for _ in range(rng.randrange(1, 4))}))
  images = [
      "data:image/png;base64,@@@", "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
      "data:image/png;base64," + base64.b64encode(_png(2, 2)).decode(),                  # too small
      "data:image/png;base64," + base64.b64encode(_huge_canvas_png()).decode(),          # a bomb
      "data:image/png;base64," + base64.b64encode(_png(8, 8)[:40]).decode(),             # truncated
      "data:text/plain,hello", "file:///etc/passwd", "ftp://example.com/x.png", "javascript:alert(1)",
      f"http://127.0.0.1:{port}/health", f"http://localhost:{port}/health", "http://10.0.0.1/x.png",
      "http://169.254.169.254/latest/meta-data/", "http://[::1]/x.png", "http://0.0.0.0/x.png"]
  for url in images:
    cases.append(("/v1/chat/completions", dict(chat, messages=[_image_part(url)])))
  # Past the context: an answer budget that does not fit after the prompt.
  cases.append(("/v1/chat/completions", dict(chat, messages=[
      {"role": "user", "content": "seven " * 20}], max_tokens=30)))
  cases.append(("/v1/chat/completions", dict(chat, messages=[{"role": "user", "content": "nine " * 200}])))
  cases.append(("/v1/chat/completions", b'{"x": "' + b"a" * (1 << 20) + b'"}'))  # over 1 MiB: 413
  cases.append(("/v1/nothing", chat))
  return cases


def test_hundreds_of_malformed_requests_get_4xx_and_the_server_stays_up(served):
  port = int(served.url.rsplit(":", 1)[1])
  cases = _malformed(port)
  assert len(cases) >= 250
  session = requests.Session()
  session.headers.update(served.headers())
  for route, body in cases:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = session.post(served.url + route, data=data, timeout=60,
                            headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (route, data[:200], response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and error["type"], error
  assert session.get(served.url + "/health", timeout=10).json()["status"] == "ok"
  ok = session.post(served.url + "/v1/chat/completions", json={
      "model": "tiny", "messages": [{"role": "user", "content": "seven"}], "max_tokens": 3}, timeout=60)
  assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")
