"""The HTTP application (aiohttp): OpenAI's routes, the playground page, and what guards them.

  GET  /                        the playground page (playground.html)
  GET  /health                  {"status": "ok", ...}: the only route without the API key
  GET  /v1/models               the served model
  POST /v1/chat/completions     text and image_url parts; stream=true as server-sent events
  POST /v1/images/generations   PNGs of the image tokenizer's size, as b64_json

With an API key every route but /health needs `Authorization: Bearer KEY`; HTTP Basic with the key
as the password is accepted too, so a browser asks for it once on the page and sends it with the
page's own requests. Every refusal is an OpenAI-style error body with a 4xx status (401 key, 404
model or route, 413 body over the limit, 429 queue full, 400 anything malformed); 504 when a request
runs past its timeout. A client that disconnects (aiohttp cancels its handler) frees its jobs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import importlib.resources
import json
import secrets
import time

from absl import logging
from aiohttp import web

from synergen_jax.serving import prompts as prompt_lib
from synergen_jax.serving.batcher import Batcher, Job
from synergen_jax.serving.completion import Answer
from synergen_jax.serving.engine import Engine
from synergen_jax.serving.errors import ApiError, bad, error_body
from synergen_jax.serving.image_input import ImageLimits
from synergen_jax.serving.requests import chat_request, image_request

OPEN_ROUTES = ("/health",)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
  model_name: str
  api_key: str | None = None
  chat_template: bool = False       # prompt with the run's chat template (prompts.py)
  max_body_bytes: int = 16 << 20
  image_limits: ImageLimits = ImageLimits()
  timeout_s: float = 120.0          # per request, queueing included
  max_images: int = 8               # n of one image request
  window_s: float = 0.01            # how long the first job of a batch waits for others
  max_queue: int = 256              # jobs waiting (one per image / answer) before 429


def _given_key(request: web.Request) -> str:
  scheme, _, value = request.headers.get("Authorization", "").partition(" ")
  if scheme.lower() == "bearer":
    return value.strip()
  if scheme.lower() == "basic":
    try:
      return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
      return ""
  return ""


def _json_error(status: int, message: str, param=None, code=None, headers=None) -> web.Response:
  return web.json_response(error_body(status, message, param, code), status=status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler):
  try:
    return await handler(request)
  except ApiError as e:
    return web.json_response(e.body(), status=e.status)
  except web.HTTPException as e:
    if e.status < 400:
      raise
    return _json_error(e.status, e.reason if e.status != 413 else
                       f"the request body is over the limit of {request.app['settings'].max_body_bytes}"
                       " bytes", code="request_too_large" if e.status == 413 else None)
  except (asyncio.CancelledError, ConnectionResetError):
    raise
  except Exception as e:  # noqa: BLE001 - one bad request must not take the server down
    logging.exception("unexpected error on %s", request.path)
    return _json_error(500, f"internal error: {type(e).__name__}")


@web.middleware
async def _auth(request: web.Request, handler):
  key = request.app["settings"].api_key
  if key and request.path not in OPEN_ROUTES and not hmac.compare_digest(
      _given_key(request).encode(), key.encode()):
    # The page gets a Basic challenge: the browser asks once and sends the key with every request.
    headers = {"WWW-Authenticate": 'Basic realm="synergen_jax"'} if request.path == "/" else None
    return _json_error(401, "a valid API key is required (Authorization: Bearer KEY)",
                       code="invalid_api_key", headers=headers)
  return await handler(request)


async def _body(request: web.Request):
  raw = await request.read()              # over client_max_size: 413 (the middleware answers)
  try:
    return json.loads(raw)
  except (ValueError, RecursionError) as e:    # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise bad(f"the request body is not valid JSON: {str(e)[:120]}") from e


async def _next(job: Job, deadline: float):
  try:
    event = await asyncio.wait_for(job.events.get(), max(0.0, deadline - time.monotonic()))
  except TimeoutError:
    raise ApiError(504, "the request ran past the server's timeout", code="timeout") from None
  if event[0] == "error":
    raise event[1]
  return event


# -- routes ---------------------------------------------------------------------------------------

async def page(request: web.Request) -> web.Response:
  html = importlib.resources.files("synergen_jax.serving").joinpath("playground.html").read_text()
  return web.Response(text=html, content_type="text/html",
                      headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"})


async def health(request: web.Request) -> web.Response:
  batcher: Batcher = request.app["batcher"]
  return web.json_response({"status": "ok", "queued": len(batcher.waiting), "batches": batcher.batches,
                            "rows": batcher.rows})


async def models(request: web.Request) -> web.Response:
  app = request.app
  engine: Engine = app["engine"]
  return web.json_response({"object": "list", "data": [{
      "id": app["settings"].model_name, "object": "model", "created": app["started"],
      "owned_by": "synergen_jax", "context_length": engine.context, "image_size": engine.image_size,
      "max_tokens": engine.max_tokens}]})


async def images(request: web.Request) -> web.Response:
  app, settings, engine = request.app, request.app["settings"], request.app["engine"]
  deadline = time.monotonic() + settings.timeout_s
  req = image_request(await _body(request), settings.model_name, engine.image_size,
                      settings.max_images)
  ids = engine.image_prompt(req.prompt)
  (group, cfg), loop = engine.image_group(req.guidance_scale), asyncio.get_running_loop()
  # Image k of a request with seed s is the image a request with seed s + k gets first.
  jobs = [Job(group, ids, (req.seed + k) % 2**32, asyncio.Queue(), loop, settings=(cfg,))
          for k in range(req.n)]
  app["batcher"].submit(jobs)
  try:
    pngs = [(await _next(job, deadline))[1] for job in jobs]
  finally:
    app["batcher"].cancel(jobs)
  return web.json_response({"created": int(time.time()), "data": [
      {"b64_json": base64.b64encode(p).decode(), "revised_prompt": None} for p in pngs]})


async def chat_completions(request: web.Request) -> web.StreamResponse:
  app, settings, engine = request.app, request.app["settings"], request.app["engine"]
  deadline = time.monotonic() + settings.timeout_s
  req = chat_request(await _body(request), settings.model_name, engine.max_tokens)
  messages = await prompt_lib.decoded_messages(req.messages, settings.image_limits)
  loop = asyncio.get_running_loop()
  # Off the event loop: the image tokenizer encodes the images.
  prompt = await loop.run_in_executor(None, prompt_lib.chat_prompt, engine.loaded, messages,
                                      settings.chat_template)
  slots = len(prompt["text_tokens"])
  budget = engine.answer_budget(slots, req.max_tokens)
  tok = engine.loaded.tokenizer()
  job = Job(engine.chat_group(req.top_k), prompt, req.seed, asyncio.Queue(), loop,
            answer=Answer(tok.decode, prompt_lib.stop_ids(engine.loaded, settings.chat_template),
                          req.stop, budget),
            settings=(req.temperature, req.top_p))
  app["batcher"].submit([job])
  head = dict(id=f"chatcmpl-{secrets.token_hex(12)}", created=int(time.time()),
              model=settings.model_name, system_fingerprint=f"step-{engine.loaded.step}")
  try:
    if req.stream:
      return await _stream(request, job, head, deadline, slots, req.include_usage)
    finish = None
    while finish is None:
      _, _, finish = await _next(job, deadline)
    return web.json_response(dict(head, object="chat.completion", choices=[dict(
        index=0, message=dict(role="assistant", content=job.answer.text), logprobs=None,
        finish_reason=finish)], usage=_usage(slots, job)))
  finally:
    app["batcher"].cancel([job])


def _usage(slots: int, job: Job) -> dict:
  done = len(job.answer.ids) + (job.answer.finish == "stop")
  return dict(prompt_tokens=slots, completion_tokens=done, total_tokens=slots + done)


async def _stream(request, job: Job, head: dict, deadline: float, slots: int,
                  include_usage: bool) -> web.StreamResponse:
  response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                         "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
  await response.prepare(request)

  async def send(delta: dict, finish=None, **extra):
    chunk = dict(head, object="chat.completion.chunk", choices=[
        dict(index=0, delta=delta, logprobs=None, finish_reason=finish)], **extra)
    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

  await send({"role": "assistant", "content": ""})
  try:
    finish = None
    while finish is None:
      _, delta, finish = await _next(job, deadline)
      if delta:
        await send({"content": delta})
    await send({}, finish)
    if include_usage:
      chunk = dict(head, object="chat.completion.chunk", choices=[], usage=_usage(slots, job))
      await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
  except ApiError as e:          # after the headers went out: an error event, as OpenAI sends
    await response.write(f"data: {json.dumps(e.body())}\n\n".encode())
  await response.write(b"data: [DONE]\n\n")
  await response.write_eof()
  return response


async def _not_found(request: web.Request) -> web.Response:
  raise ApiError(404, f"no route {request.method} {request.path}", code="not_found")


def make_app(engine: Engine, settings: ServerSettings) -> web.Application:
  app = web.Application(middlewares=[_errors, _auth], client_max_size=settings.max_body_bytes)
  app["engine"], app["settings"], app["started"] = engine, settings, int(time.time())

  async def start(app):
    app["batcher"] = Batcher(engine.run_batch, max_batch=engine.rows, window_s=settings.window_s,
                             max_queue=settings.max_queue)
    app["batcher"].start()

  async def stop(app):
    await app["batcher"].stop()

  app.on_startup.append(start)
  app.on_cleanup.append(stop)
  app.router.add_get("/", page)
  app.router.add_get("/health", health)
  app.router.add_get("/v1/models", models)
  app.router.add_post("/v1/chat/completions", chat_completions)
  app.router.add_post("/v1/images/generations", images)
  app.router.add_route("*", "/{tail:.*}", _not_found)
  return app
