"""Teacher-forced log-probabilities of text: per next token (score CLI) and per continuation
(zero-shot classification ranks candidate captions by them)."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core.config import ModelConfig
from synergen_jax.data.layout import Text, layout_example, pack, stack_rows
from synergen_jax.model.synergen_vl import SynerGenVL


@functools.lru_cache(maxsize=8)
def _target_logprobs(mc: ModelConfig):
  model = SynerGenVL(mc)

  @jax.jit
  def run(params, batch):
    """log p(text_targets[t] | slots <= t) for every slot: [B, T]."""
    hidden = model.apply(params, batch, method=SynerGenVL.hidden_states)
    logp = jax.nn.log_softmax(model.apply(params, hidden, method=SynerGenVL.text_logits), axis=-1)
    return jnp.take_along_axis(logp, batch["text_targets"][..., None], axis=-1)[..., 0]
  return run


def _rows(examples, length: int, fold):
  return stack_rows([pack([ex], length, fold) for ex in examples])


def next_token_logprobs(mc: ModelConfig, params, token_ids: Sequence[int]) -> list[float]:
  """The log-probability of token i+1 given tokens 0..i, for each i: len(token_ids) - 1 values.

  The ids are taken as given (include <s> yourself if the model expects it)."""
  if len(token_ids) < 2:
    raise ValueError(f"score needs at least 2 token ids, got {len(token_ids)}")
  bad = [t for t in token_ids if not 0 <= t < mc.text_vocab]
  if bad:
    raise ValueError(f"token ids {bad[:5]} are outside the text vocabulary [0, {mc.text_vocab})")
  ex = layout_example([Text(list(token_ids))], mc.fold, add_bos=False, add_eos=False)
  batch = jax.tree.map(jnp.asarray, _rows([ex], len(token_ids), mc.fold))
  logp = np.asarray(_target_logprobs(mc)(params, batch))[0]
  return [float(x) for x in logp[:len(token_ids) - 1]]


def continuation_scores(mc: ModelConfig, params, examples: Sequence[dict[str, np.ndarray]],
                        length: int, batch_size: int = 256) -> np.ndarray:
  """Sum of log-probabilities over each laid-out example's weighted text targets (its `loss=True`
  parts and their closing </s>): [len(examples)]. Rows are padded to `length` slots."""
  out = []
  fn = _target_logprobs(mc)
  for start in range(0, len(examples), batch_size):
    chunk = list(examples[start:start + batch_size])
    chunk += [chunk[-1]] * (batch_size - len(chunk)) if len(examples) > batch_size else []
    rows = _rows(chunk, length, mc.fold)
    logp = np.asarray(fn(params, jax.tree.map(jnp.asarray, rows)))
    out.append((logp * rows["text_weights"]).sum(-1)[:min(batch_size, len(examples) - start)])
  return np.concatenate(out)
