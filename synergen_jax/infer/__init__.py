"""Using a trained workdir: decoding, scoring, batch jobs.

  decode.py   KV-cached decoding: text sampling, image generation with CFG, prompt layout
  loader.py   a workdir -> config, parameters, tokenizers, decoder
  scoring.py  teacher-forced log-probabilities (score, zero-shot classification)
  tasks.py    text -> images and images -> text as plain functions
  chat.py     OpenAI-style messages -> prompts in the run's chat template; stop ids
  jobs.py     batch jobs over a jsonl: images / answers, every local device, resumable
"""
