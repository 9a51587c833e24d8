"""Serve a trained workdir: an OpenAI-compatible API with dynamic batching, and a playground page.

  python -m synergen_jax.serve --workdir DIR [--host 127.0.0.1 --port 8000] [--api_key KEY]

Routes (docs/serving.md): POST /v1/chat/completions (text and image_url parts, stream=true as
server-sent events), POST /v1/images/generations (b64_json PNGs), GET /v1/models, GET /health, and
the playground page at /. Requests that arrive within --batch_window_ms of each other share a batch
of --max_batch rows on this host's devices; a request's seed fixes its answer whatever shares its batch.

Binds 127.0.0.1 unless --host says otherwise. --api_key (or SYNERGEN_API_KEY) makes every route but
/health require `Authorization: Bearer KEY`. Remote image URLs are refused unless
--allow_remote_images, and even then never fetched from loopback or private addresses.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from aiohttp import web

from synergen_jax.infer import chat, loader
from synergen_jax.infer.decode import Sampling
from synergen_jax.serving.app import ServerSettings, make_app
from synergen_jax.serving.engine import Engine, EngineSettings
from synergen_jax.serving.image_input import ImageLimits

API_KEY_ENV = "SYNERGEN_API_KEY"

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training workdir (config.json + checkpoints)")
flags.DEFINE_string("host", "127.0.0.1", "address to bind (0.0.0.0: every interface; set an API key)")
flags.DEFINE_integer("port", 8000, "port to bind")
flags.DEFINE_string("api_key", None, f"key every route but /health requires (default: ${API_KEY_ENV})")
flags.DEFINE_string("model_name", None, "the model id the API reports (default: the workdir's name)")
flags.DEFINE_enum("chat", "auto", ["auto", "true", "false"], "prompt with the run's chat template "
                  "(auto: when it trained on chat data), else as `sample --image --question`")
flags.DEFINE_integer("max_batch", 8, "rows per batch (the fixed batch every request shares)")
flags.DEFINE_float("batch_window_ms", 10.0, "how long a batch's first request waits for others")
flags.DEFINE_integer("max_queue", 256, "jobs (images, answers) waiting before requests get 429")
flags.DEFINE_float("timeout_s", 120.0, "per-request timeout, queueing included (then 504)")
flags.DEFINE_integer("max_tokens", 64, "longest chat answer (tokens)")
flags.DEFINE_integer("max_images", 8, "most images (n) one generation request may ask for")
flags.DEFINE_float("cfg", 3.0, "default classifier-free guidance scale (a request's guidance_scale)")
flags.DEFINE_float("image_temperature", 1.0, "image code sampling temperature")
flags.DEFINE_integer("image_top_k", 20, "image code sampling top-k (0 = all codes)")
flags.DEFINE_integer("max_body_mb", 16, "largest request body (MiB)")
flags.DEFINE_integer("max_image_mb", 8, "largest encoded input image (MiB)")
flags.DEFINE_integer("max_image_pixels", 16 << 20, "largest input image (width x height)")
flags.DEFINE_bool("allow_remote_images", False, "fetch http(s) image URLs (public addresses only)")
flags.DEFINE_bool("warmup", True, "compile the default programs before accepting requests")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.max_batch < 1 or FLAGS.max_queue < 1 or FLAGS.max_tokens < 1 or FLAGS.timeout_s <= 0:
    raise app.UsageError("--max_batch, --max_queue, --max_tokens and --timeout_s must be positive")
  loaded = loader.load(FLAGS.workdir, mesh=loader.local_mesh())
  template = chat.trained_on_chat(loaded) if FLAGS.chat == "auto" else FLAGS.chat == "true"
  engine = Engine(loaded, EngineSettings(
      max_batch=FLAGS.max_batch, max_tokens=FLAGS.max_tokens, cfg_scale=FLAGS.cfg,
      image_sampling=Sampling(temperature=FLAGS.image_temperature, top_k=FLAGS.image_top_k)))
  settings = ServerSettings(
      model_name=FLAGS.model_name or os.path.basename(os.path.normpath(FLAGS.workdir)),
      api_key=FLAGS.api_key or os.environ.get(API_KEY_ENV) or None, chat_template=template,
      max_body_bytes=FLAGS.max_body_mb << 20, timeout_s=FLAGS.timeout_s, max_images=FLAGS.max_images,
      window_s=FLAGS.batch_window_ms / 1000, max_queue=FLAGS.max_queue,
      image_limits=ImageLimits(max_bytes=FLAGS.max_image_mb << 20,
                               max_pixels=FLAGS.max_image_pixels,
                               allow_remote=FLAGS.allow_remote_images))
  if FLAGS.warmup:
    engine.warm_up()
  if FLAGS.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
    logging.warning("serving on %s without an API key: anyone who reaches it can use the model",
                    FLAGS.host)
  print(f"serve: {settings.model_name} (step {loaded.step}, {engine.rows} rows per batch, chat "
        f"template {'on' if template else 'off'}) on http://{FLAGS.host}:{FLAGS.port}", flush=True)
  web.run_app(make_app(engine, settings), host=FLAGS.host, port=FLAGS.port, print=None,
              handler_cancellation=True, access_log=None)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
