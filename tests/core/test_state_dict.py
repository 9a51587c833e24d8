"""The shared state-dict checks: a tree flattens to "/" paths and nests back; a state dict that does not
fit is refused with every unknown, missing and misshaped tensor named, before anything is converted."""

import jax
import numpy as np
import pytest

from synergen_jax.core import state_dict
from synergen_jax.core.errors import CheckpointError

TREE = {"encoder": {"conv_in": {"kernel": np.ones((3, 3, 1, 4)), "bias": np.zeros(4)}},
        "codebook": np.arange(6.0).reshape(3, 2)}
EXPECTED = {"encoder.conv_in.weight": (4, 1, 3, 3), "encoder.conv_in.bias": (4,),
            "quantize.embedding.weight": (3, 2)}


def _state():
  return {name: np.zeros(shape, np.float32) for name, shape in EXPECTED.items()}


def test_nest_inverts_flatten():
  flat = state_dict.flatten(TREE)
  assert sorted(flat) == ["codebook", "encoder/conv_in/bias", "encoder/conv_in/kernel"]
  back = state_dict.nest(flat)
  assert jax.tree.structure(back) == jax.tree.structure(TREE)
  jax.tree.map(np.testing.assert_array_equal, back, TREE)
  # Abstract trees (what eval_shape gives) flatten the same way.
  abstract = jax.eval_shape(lambda: jax.tree.map(np.asarray, TREE))
  assert {p: s.shape for p, s in state_dict.flatten(abstract).items()}["codebook"] == (3, 2)


def test_nest_refuses_a_path_through_a_leaf():
  with pytest.raises(ValueError, match="'a/b/c' runs through the leaf 'b'"):
    state_dict.nest({"a/b": 1, "a/b/c": 2})
  with pytest.raises(ValueError, match="'a/b' is also a parent"):
    state_dict.nest({"a/b/c": 2, "a/b": 1})


def test_a_fitting_state_dict_passes():
  state_dict.check(_state(), EXPECTED, "w.safetensors")
  assert state_dict.problems(_state(), EXPECTED) == []


def test_a_wrong_shape_names_the_file_the_tensor_and_both_shapes():
  state = dict(_state(), **{"encoder.conv_in.weight": np.zeros((4, 1, 5, 5))})
  with pytest.raises(CheckpointError) as e:
    state_dict.check(state, EXPECTED, "w.safetensors", implied_by="config.vq")
  assert str(e.value) == ("w.safetensors: 1 misshaped tensors encoder.conv_in.weight (4, 1, 5, 5) "
                          "(config.vq implies (4, 1, 3, 3))")


def test_unknown_and_missing_tensors_are_all_reported_with_counts():
  state = _state()
  del state["encoder.conv_in.bias"]
  state["decoder.extra.weight"] = np.zeros(2)
  state["encoder.bn.num_batches_tracked"] = np.zeros(())
  with pytest.raises(CheckpointError) as e:
    state_dict.check(state, EXPECTED, "w.safetensors", ignored={"encoder.bn.num_batches_tracked"})
  assert str(e.value) == ("w.safetensors: 1 unknown tensors ['decoder.extra.weight']; "
                          "1 missing tensors ['encoder.conv_in.bias']")
  many = {f"extra.{i}": np.zeros(1) for i in range(8)}
  found = state_dict.problems({**_state(), **many}, EXPECTED, shown=3)
  assert found == ["8 unknown tensors ['extra.0', 'extra.1', 'extra.2']"]


def test_compared_maps_the_file_layout_but_the_message_shows_the_file_shape():
  squeeze = lambda name, shape: shape[:2] if len(shape) == 4 and shape[2:] == (1, 1) else shape
  expected = {"attn.q.weight": (8, 8)}
  assert state_dict.problems({"attn.q.weight": np.zeros((8, 8, 1, 1))}, expected,
                             compared=squeeze) == []
  found = state_dict.problems({"attn.q.weight": np.zeros((4, 4, 1, 1))}, expected, compared=squeeze)
  assert found == ["1 misshaped tensors attn.q.weight (4, 4, 1, 1) (config implies (8, 8))"]
