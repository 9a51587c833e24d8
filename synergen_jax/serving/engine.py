"""The model side of a batch: images (the CFG halves in the same batch) and streamed chat answers.

Every batch has the same shapes: `rows` rows (a short batch is filled up with copies of its first
row), generation prompts left-padded to the longest prompt the context admits, chat prompts to the
context less one slot, and temperature, top-p and guidance are per-row inputs, not constants. So
each program compiles once per group (images with or without guidance; chat per top-k), and a row's
result depends only on its own prompt, seed and settings, not on what else shares its batch (the
rows sample from their own keys, decode.row_keys). The few most recent groups' programs are kept.
"""

from __future__ import annotations

import collections
import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image as PILImage

from synergen_jax.core.batch import windows_to_grid
from synergen_jax.infer import tasks
from synergen_jax.infer.decode import Sampling, generation_prompt, left_pad, row_keys
from synergen_jax.infer.loader import Loaded
from synergen_jax.serving.batcher import Job
from synergen_jax.serving.errors import bad
from synergen_jax.serving.stepper import TextStepper

IMAGE, CHAT = "image", "chat"


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  max_batch: int = 8              # rows per batch (rounded up to a multiple of the local devices)
  max_tokens: int = 64            # the most tokens a chat answer may have
  cfg_scale: float = 3.0          # image generation's default guidance scale
  image_sampling: Sampling = Sampling(temperature=1.0, top_k=20)
  programs: int = 8               # compiled groups kept


class Engine:

  def __init__(self, loaded: Loaded, settings: EngineSettings = EngineSettings()):
    self.loaded, self.settings = loaded, settings
    devices = 1 if loaded.mesh is None else loaded.mesh.size
    self.rows = -(-settings.max_batch // devices) * devices
    self.context = loaded.config.data.seq_len
    self.image_prompt_len = self.context - loaded.mc.windows_per_image
    self.chat_prompt_len = self.context - 1
    self.max_tokens = max(1, min(settings.max_tokens, self.context - 1))
    data = loaded.config.data
    self._prefix = loaded.encode_text(data.generation_prompt)
    self._uncond = loaded.encode_text(data.uncond_prompt)
    self.image_size = loaded.image_tokenizer.image_size
    # The image tokenizer pads every call to its batch size (256 by default, for batch jobs); here a
    # call is one batch's images or one request's tiles, so a batch of `rows` wastes far less.
    loaded.image_tokenizer.batch_size = self.rows
    self._programs: collections.OrderedDict = collections.OrderedDict()

  # -- requests -> jobs -----------------------------------------------------------------------------

  def image_prompt(self, text: str) -> list[int]:
    ids = self._prefix + self.loaded.encode_text(text)
    slots = len(generation_prompt(ids, self.loaded.mc.fold, self.loaded.special)["text_tokens"])
    if slots > self.image_prompt_len:
      raise bad(f"'prompt' takes {slots} slots; at most {self.image_prompt_len} fit the context of "
                f"{self.context} with the image's {self.loaded.mc.windows_per_image} windows",
                "prompt", "context_length_exceeded")
    return ids

  def image_group(self, cfg_scale: float | None) -> tuple[tuple, float]:
    """(the group, the row's guidance): guided rows share programs whatever their scale; a scale of
    1 needs no unconditional half, a program of its own."""
    cfg = float(self.settings.cfg_scale if cfg_scale is None else cfg_scale)
    return (IMAGE, cfg != 1.0), cfg

  def chat_group(self, top_k: int) -> tuple:
    return (CHAT, int(top_k))

  def answer_budget(self, prompt_slots: int, max_tokens: int | None) -> int:
    """The answer's token budget; a prompt past the context is refused."""
    room = self.context - prompt_slots
    if room < 1 or (max_tokens is not None and max_tokens > room):
      raise bad(f"the prompt takes {prompt_slots} of the context's {self.context} slots, leaving "
                f"{max(room, 0)} for the answer" + (f"; max_tokens is {max_tokens}" if max_tokens else ""),
                "messages", "context_length_exceeded")
    return min(room, self.max_tokens) if max_tokens is None else max_tokens

  # -- batches (in the model thread) ----------------------------------------------------------------

  def run_batch(self, group: tuple, jobs: list[Job]) -> None:
    (self._run_images if group[0] == IMAGE else self._run_chat)(group, jobs)

  def _program(self, group: tuple):
    if group in self._programs:
      self._programs.move_to_end(group)
      return self._programs[group]
    if group[0] == IMAGE:
      program = jax.jit(self.loaded.decoder.images_fn, static_argnums=(3, 5))
    else:
      program = TextStepper(self.loaded.decoder, self.rows, self.chat_prompt_len, self.max_tokens,
                            top_k=group[1])
    self._programs[group] = program
    if len(self._programs) > self.settings.programs:
      self._programs.popitem(last=False)
    return program

  def _filled(self, values: list) -> list:
    """`rows` values: these, then copies of the first (a short batch's filler rows)."""
    return values + [values[0]] * (self.rows - len(values))

  def _run_images(self, group: tuple, jobs: list[Job]) -> None:
    grids = self.image_codes([j.payload for j in jobs], [j.seed for j in jobs],
                             [j.settings[0] for j in jobs])
    pixels = self.loaded.image_tokenizer.decode(grids)
    for job, image in zip(jobs, pixels):
      if not job.cancelled:
        job.send(("image", png(image)))

  def image_codes(self, prompts: list[list[int]], seeds: list[int],
                  cfgs: list[float]) -> np.ndarray:
    """Code grids of up to `rows` prompts, each with its own guidance (all 1, or none 1), at the
    batch's fixed shapes."""
    d, mc, special = self.loaded.decoder, self.loaded.mc, self.loaded.special
    real = len(prompts)
    prompts, seeds, cfgs = self._filled(prompts), self._filled(seeds), self._filled(cfgs)
    group, _ = self.image_group(cfgs[0])
    if any(self.image_group(c)[0] != group for c in cfgs):
      raise ValueError(f"image rows with and without guidance in one batch: {cfgs}")
    laid = [generation_prompt(p, mc.fold, special) for p in prompts]
    if group[1]:
      laid += [generation_prompt(self._uncond, mc.fold, special)] * self.rows
    batch = jax.tree.map(jnp.asarray, left_pad(laid, self.image_prompt_len))
    with d.under_mesh():
      windows = self._program(group)(d.params, batch, row_keys(seeds), self.rows,
                                     jnp.asarray(cfgs, jnp.float32), self.settings.image_sampling)
    return windows_to_grid(np.asarray(windows), mc.code_grid, mc.fold)[:real]

  def _run_chat(self, group: tuple, jobs: list[Job]) -> None:
    filled = self._filled(jobs)
    prompts, seeds = [j.payload for j in filled], [j.seed for j in filled]
    settings = [j.settings for j in filled]

    def on_tokens(tokens: np.ndarray) -> bool:
      live = False
      for job, token in zip(jobs, tokens):
        if job.cancelled or job.answer.finish is not None:
          continue
        delta = job.answer.add(int(token))
        if delta or job.answer.finish:
          job.send(("delta", delta, job.answer.finish))
        live |= job.answer.finish is None
      return live

    self._program(group).run(prompts, seeds, [t for t, _ in settings], [p for _, p in settings],
                             on_tokens)

  def warm_up(self) -> None:
    """Compiles the default groups (guided images, chat without top-k) and the image tokenizer both
    ways, so that the first requests do not wait for it."""
    grids = self.image_codes([self._prefix], [0], [self.image_group(None)[1]])
    tasks.image_codes(self.loaded, self.loaded.image_tokenizer.decode(grids)[0][..., :1].repeat(3, -1))
    prompt = generation_prompt(self._prefix, self.loaded.mc.fold, self.loaded.special)
    more = iter([True, False])           # the prefill and one step
    self._program(self.chat_group(0)).run([prompt] * self.rows, [0] * self.rows, [1.0] * self.rows,
                                          [1.0] * self.rows, lambda t: next(more))


def png(image: np.ndarray) -> bytes:
  """uint8 [S, S, C] (C 1 or 3) -> PNG bytes."""
  pil = PILImage.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = io.BytesIO()
  pil.save(out, format="PNG")
  return out.getvalue()
