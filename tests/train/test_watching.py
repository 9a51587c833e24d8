"""Watching a run from anywhere: TensorBoard events (scalars, preview images and their texts) and the
preview PNGs land in a bucket workdir (a GCS emulator on loopback), and a resumed run adds its own
events file beside the first run's. Events are read back from the bucket as TensorBoard would: the
TFRecord framing parsed here, each record an Event proto (tensorboardX's copy of the schema)."""

import io

import numpy as np
from PIL import Image

from helpers import events_in
from synergen_jax.core import storage
from synergen_jax.train import events as events_lib
from synergen_jax.train.events import EventFiles
from synergen_jax.train.loop import train


def watch_config(tiny_data, steps: int):
  """tiny_data's config: held-out passes (with 4-image previews) at steps 2 and 4, a checkpoint at
  each, a learning rate that moves the model within two steps, greedy previews (a model this young
  has nearly flat image logits: sampled codes would follow the fixed seed's noise, not the model);
  seq_len 64 so that a held-out captioning prompt (34 text tokens + an image) leaves room for a
  caption."""
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.seq_len = 64
  config.train.update(steps=steps, log_every=1, eval_every=2, eval_batches=1, checkpoint_every=2,
                      preview_images=4, preview_temperature=0.0)
  config.optim.update(schedule="constant", warmup_steps=0, learning_rate=3e-3)
  return config


def steps_of(values, tag) -> list[int]:
  return sorted(step for step, t, _ in values if t == tag)


def png(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_events_and_previews_reach_a_bucket_and_a_resume_adds_its_own(gcs_bucket, tiny_data):
  workdir = f"{gcs_bucket}/run"
  config = watch_config(tiny_data, 4)
  config.train.events_every_secs = 3600.0     # only the held-out passes and the end copy them out
  train(config, workdir, stop_after=2)
  first = events_in(workdir)
  assert len(first) == 1
  train(config, workdir)                      # a new writer: resumes at step 2, runs to 4
  found = events_in(workdir)
  assert len(found) == 2 and set(first) < set(found), sorted(found)
  (second,) = set(found) - set(first)
  assert steps_of(found[next(iter(first))], "loss") == [1, 2]     # the first run's file kept whole
  assert steps_of(found[second], "loss") == [3, 4]
  values = [v for vs in found.values() for v in vs]
  assert steps_of(values, "eval/loss/image") == [2, 4]
  for name in ("generated", "captions"):
    assert steps_of(values, f"previews/{name}") == [2, 4]
    assert steps_of(values, f"previews/{name}/text_summary") == [2, 4]   # the texts as a table
    for step in (2, 4):
      image = next(v for s, t, v in values if s == step and t == f"previews/{name}")
      written = (storage.path(workdir) / "previews" / f"step_{step}_{name}.png").read_bytes()
      np.testing.assert_array_equal(png(image.image.encoded_image_string), png(written))
  table = next(v for s, t, v in values if t == "previews/captions/text_summary")
  assert b"| held-out caption | model caption |" in table.tensor.string_val[0]
  # The same prompts and seed at both passes: the grids differ because the model learned.
  generated = [png((storage.path(workdir) / "previews" / f"step_{s}_generated.png").read_bytes())
               for s in (2, 4)]
  assert generated[0].shape == generated[1].shape and not np.array_equal(*generated)


def test_a_bucket_events_file_goes_out_when_due_and_rotates_whole(gcs_bucket, monkeypatch):
  workdir = f"{gcs_bucket}/events"
  writer = EventFiles(workdir, every_secs=3600)
  writer.scalars(1, {"loss": 2.0})
  writer.sync()                               # not due yet: nothing in the bucket
  assert events_in(workdir) == {}
  writer.sync(force=True)
  assert [steps_of(v, "loss") for v in events_in(workdir).values()] == [[1]]
  monkeypatch.setattr(events_lib, "ROTATE_BYTES", 0)
  writer.scalars(2, {"loss": 1.5})
  writer.sync(force=True)                     # copied out, closed, a new file started
  writer.scalars(3, {"loss": 1.0})
  writer.close()
  found = events_in(workdir)
  assert sorted(steps_of(v, "loss") for v in found.values()) == [[1, 2], [3]]
