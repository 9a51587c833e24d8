"""Training: python -m synergen_jax.train --config configs/X.py --workdir DIR.

  optimizer.py   AdamW, schedules, stages as optax masks over parameter paths
  state.py       train state, its shardings, the jitted train step (build_train_step)
  checkpoint.py  Orbax checkpoints (+ data-iterator state), the workdir's files and config
  data_state.py  Orbax handler: one iterator-state file per logical data shard
  metrics.py     metrics.jsonl, TensorBoard, the progress line
  events.py      TensorBoard events on any file system (staged locally, copied whole to a bucket)
  previews.py    at each held-out pass: generated images for fixed prompts, captions of held-out images
  preview_decode.py  the previews' decoding: the training forward on the training mesh
  preview_pixels.py  the image tokenizer that draws them, restored on process 0 alone
  wandb_run.py   optional Weights & Biases, one run id across preemption and resume
  heldout.py     the teacher-forced held-out pass
  loop.py        the loop, read top to bottom; __main__.py is its command line
"""
