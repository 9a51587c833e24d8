"""Example -> slots: targets are the next slot, loss lands only on the chosen parts, packing errors."""

import numpy as np
import pytest

from helpers import random_example, tiny
from synergen_jax.data.layout import IMAGE, TEXT, Image, SpecialTokens, Text, layout_example, pack


def test_targets_are_the_next_slot(rng):
  _, mc = tiny("fold=2x2")
  for _ in range(20):
    ex = random_example(mc, rng)
    text_t = np.nonzero(ex["text_weights"])[0]
    np.testing.assert_array_equal(ex["text_targets"][text_t], ex["text_tokens"][text_t + 1])
    assert (ex["modality"][text_t + 1] == TEXT).all()
    img_t = np.nonzero(ex["image_weights"])[0]
    np.testing.assert_array_equal(ex["image_targets"][img_t], ex["image_codes"][img_t + 1])
    assert (ex["modality"][img_t + 1] == IMAGE).all()


def test_generation_example_loss_is_on_image_and_eoi_only():
  sp = SpecialTokens()
  codes = np.arange(16).reshape(4, 4)
  ex = layout_example([Text([10, 11], loss=False), Image(codes, loss=True)], (2, 2), sp)
  # <s> 10 11 <boi> w0 w1 w2 w3 <eoi> </s>
  assert ex["modality"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
  assert ex["image_weights"].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]   # <boi> predicts w0
  assert ex["text_weights"].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]    # w3 predicts <eoi>
  assert ex["text_targets"][7] == sp.eoi
  np.testing.assert_array_equal(ex["image_targets"][3], [0, 1, 4, 5])     # first 2x2 window
  np.testing.assert_array_equal(ex["window_ids"][4:8], [0, 1, 2, 3])


def test_captioning_example_loss_is_on_caption_and_eos():
  ex = layout_example([Image(np.zeros((4, 4), int)), Text([10, 11, 12], loss=True)], (2, 2))
  # <s> <boi> w0..w3 <eoi> 10 11 12 </s>: <eoi> predicts 10, ..., 12 predicts </s>
  assert ex["text_weights"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
  assert not ex["image_weights"].any()


def test_bad_parts_raise():
  with pytest.raises(ValueError, match="does not fold"):
    layout_example([Image(np.zeros((4, 6), int))], (4, 4))
  with pytest.raises(ValueError, match="empty text"):
    layout_example([Text([])], (1, 1))
  ex = layout_example([Text([7] * 10)], (1, 1))
  with pytest.raises(ValueError, match="example 1 of 12 slots does not fit"):
    pack([ex, ex], 20, (1, 1))
