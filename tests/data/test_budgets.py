"""Per-row budgets: counted from the index as the layout counts them, derived by the documented rule,
kept by the packer, examples alone over one skipped and counted, a batch over one refused."""

import grain
import numpy as np
import pytest

from helpers import tiny
from synergen_jax.core.config import CAPACITIES
from synergen_jax.data import budgets, layout, pipeline
from synergen_jax.core.errors import DataError
from synergen_jax.data.records import decode_record, record_parts


@pytest.mark.parametrize("fold", ["1x1", "2x2"])
def test_index_counts_are_the_laid_out_counts(tiny_data, fold):
  _, mc = tiny(f"fold={fold}")
  split = pipeline.open_split(tiny_data["data_dir"], "train", mc)
  reader = grain.sources.ArrayRecordDataSource(list(split.files))
  index = budgets.index_counts(split, mc)
  checked = 0
  for i in range(0, len(reader), 37):
    ex = layout.layout_example(record_parts(decode_record(reader[i])), mc.fold, split.special)
    assert budgets.slot_counts(ex) == {name: int(index[name][i]) for name in CAPACITIES}
    checked += 1
  assert checked > 50
  assert index["text_target_capacity"].max() > 0 and index["unfold_capacity"].max() > 0


def test_derived_budgets_follow_the_rule():
  counts = {"text_target_capacity": np.array([10, 0]), "image_slot_capacity": np.array([64, 32]),
            "unfold_capacity": np.array([64, 0])}
  slots = np.array([100, 60])
  # densities per slot: 5/80, 48/80, 32/80; budget = 1.25 * 256 * density rounded up to 8 (256/64).
  assert budgets.derive([(counts, slots, 1.0)], 256) == {
      "text_target_capacity": 24, "image_slot_capacity": 192, "unfold_capacity": 128}
  # An example longer than the row does not count: only the first one's densities remain.
  # text 0.1 -> 32; images 0.64 -> 204.8 -> 208.
  assert budgets.derive([(counts, np.array([100, 300]), 1.0)], 256) == {
      "text_target_capacity": 32, "image_slot_capacity": 208, "unfold_capacity": 208}
  # Never below the largest single example (100 > 1.25 * 1024 * 25 / 775 -> 48), never above the
  # row; a count of 0 still gets one step (16 at 1,024).
  rare = {"text_target_capacity": np.array([100, 0, 0, 0]),
          "image_slot_capacity": np.array([0, 0, 0, 0]), "unfold_capacity": np.array([0, 0, 0, 0])}
  got = budgets.derive([(rare, np.array([100, 1000, 1000, 1000]), 1.0)], 1024)
  assert got == {"text_target_capacity": 100, "image_slot_capacity": 16, "unfold_capacity": 16}
  assert budgets.derive([(rare, np.array([100, 1000, 1000, 1000]), 1.0)], 1024,
                        {"image_slot_capacity": 256})["image_slot_capacity"] == 256
  dense = {"text_target_capacity": np.array([90]), "image_slot_capacity": np.array([0]),
           "unfold_capacity": np.array([0])}
  assert budgets.derive([(dense, np.array([100]), 1.0)], 128)["text_target_capacity"] == 128
  # A mixture weights each component's means: weight 3 on text-only examples.
  text_only = {"text_target_capacity": np.array([40]), "image_slot_capacity": np.array([0]),
               "unfold_capacity": np.array([0])}
  mixed = budgets.derive([(counts, slots, 1.0), (text_only, np.array([40]), 3.0)], 256)
  # text: (5 + 3 * 40) / (80 + 3 * 40) = 0.625 -> 200; images: 48 / 200 -> 76.8 -> 80;
  # windows 32 / 200 -> 51.2 -> 56, but the largest example holds 64.
  assert mixed == {"text_target_capacity": 200, "image_slot_capacity": 80, "unfold_capacity": 64}


def test_training_budgets_come_from_the_data_and_bind_every_batch(tiny_data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.seq_len = 64
  resolved = pipeline.resolve_budgets(config)
  mc = pipeline.validate_config(resolved)
  split = pipeline.open_split(tiny_data["data_dir"], "train", mc)
  slots = pipeline.example_slots(split.text_len, split.n_images, mc)
  want = budgets.derive([(budgets.index_counts(split, mc), slots, 1.0)], 64)
  assert {name: getattr(mc, name) for name in CAPACITIES} == want
  assert want["text_target_capacity"] < 64           # the text head runs on fewer slots than T
  it = pipeline.make_iterator(resolved)
  for _ in range(4):
    batch = next(it)
    for row in range(batch["modality"].shape[0]):
      counts = budgets.slot_counts({k: batch[k][row] for k in batch})
      assert all(counts[name] <= want[name] for name in CAPACITIES)
  # An explicit budget is kept.
  config.model.unfold_capacity = 8
  assert pipeline.resolve_budgets(config).model.unfold_capacity == 8


def test_examples_over_a_budget_are_skipped_and_counted_or_rejected(tiny_data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.seq_len = 64
  config.model.update(text_target_capacity=6, image_slot_capacity=64, unfold_capacity=64)
  mc = pipeline.validate_config(config)
  split = pipeline.open_split(tiny_data["data_dir"], "train", mc)
  text_targets = budgets.index_counts(split, mc)["text_target_capacity"]
  slots = pipeline.example_slots(split.text_len, split.n_images, mc)
  want = int(np.sum((text_targets > 6) | (slots > 64)))
  assert want > int(np.sum(slots > 64))              # the budget skips examples the row would hold
  it = pipeline.make_iterator(config)
  assert it.too_long_skipped == want
  batch = next(it)
  assert (batch["text_weights"] > 0).sum(-1).max() <= 6
  config.data.too_long = "error"
  with pytest.raises(DataError, match=r"record \d+ .* holds \d+ text-target slots but "
                                      r"config.model.text_target_capacity=6"):
    pipeline.make_iterator(config)


def test_a_batch_over_a_budget_is_refused():
  _, mc = tiny()
  rng = np.random.default_rng(0)
  examples = [layout.layout_example([layout.Text(rng.integers(6, 60, 5), True)], mc.fold)
              for _ in range(3)]
  batch = layout.stack_rows([layout.pack(examples, 32, mc.fold)])
  need = int((batch["text_weights"] > 0).sum())
  budgets.check_batch(batch, mc.__class__(**{**mc.__dict__, "text_target_capacity": need}), 32)
  with pytest.raises(DataError, match=rf"row 0 holds {need} text-target slots, over "
                                      rf"config.model.text_target_capacity={need - 1}"):
    budgets.check_batch(batch, mc.__class__(**{**mc.__dict__, "text_target_capacity": need - 1}), 32)
