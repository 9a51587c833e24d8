"""Serving a trained workdir over HTTP: an OpenAI-compatible API with dynamic batching, and a page.

  app.py            the aiohttp application: routes, API key, body limits, OpenAI-style errors, SSE
  batcher.py        dynamic batching: a bounded queue, a short window, one batch at a time
  engine.py         the model side of a batch: images (CFG halves together) and streamed text
  stepper.py        step-wise text decoding at fixed shapes, one token per call for streaming
  completion.py     one chat answer as it grows: stop ids, stop strings, max_tokens, deltas
  requests.py       request bodies -> checked settings (types, ranges), each error naming its field
  image_input.py    image_url parts -> pixels: data: URLs, guarded http(s), size limits
  prompts.py        chat messages -> a laid-out prompt (the chat template, or image + question)
  errors.py         ApiError and the OpenAI error body
  playground.html   the static page served at / (no build step, nothing fetched from elsewhere)
"""
