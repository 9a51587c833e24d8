"""Loading a workdir, scoring, sampling and evaluating it; the judge and the metric helpers."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from synergen_jax.core.errors import ConfigError, DataError
from synergen_jax.data.layout import Image, Text, layout_example, pack, stack_rows
from synergen_jax.eval import fid
from synergen_jax.eval import judge as judge_lib
from synergen_jax.infer import loader, tasks
from synergen_jax.eval.report import evaluate, named_classes
from synergen_jax.infer.scoring import continuation_scores, next_token_logprobs
from synergen_jax.model.synergen_vl import SynerGenVL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_score_cli_matches_the_training_forward(tiny_workdir):
  model = loader.load(tiny_workdir)
  ids = [model.special.bos] + model.encode_text("a picture of a seven")
  out = json.loads(_cli("synergen_jax.score", "--workdir", tiny_workdir,
                        "--token_ids", ",".join(map(str, ids))).strip().splitlines()[-1])
  # Reference: the teacher-forced training forward, log-softmax of its text logits.
  ex = layout_example([Text(ids[1:])], model.mc.fold, model.special, add_eos=False)
  batch = stack_rows([pack([ex], len(ids), model.mc.fold)])
  batch["image_weights"][:] = 0
  batch["text_weights"][0, :len(ids) - 1] = 1.0    # every next token: slot i predicts ids[i + 1]
  out_train = SynerGenVL(model.mc).apply(model.params, batch)
  want = -out_train["text_nll"][0, :len(ids) - 1]
  assert out["step"] == 60 and len(out["logprobs"]) == len(ids) - 1
  np.testing.assert_allclose(out["logprobs"], want, atol=1e-5)
  with pytest.raises(ValueError, match="outside the text vocabulary"):
    next_token_logprobs(model.mc, model.params, [1, model.mc.text_vocab + 3])


def test_sample_cli_writes_a_grid_and_captions_an_image(tiny_workdir, tmp_path):
  out = tmp_path / "grid.png"
  printed = _cli("synergen_jax.sample", "--workdir", tiny_workdir, "--prompt", "seven", "--num", "4",
                 "--cfg", "3", "--out", str(out))
  from PIL import Image
  grid = np.asarray(Image.open(out))
  assert grid.shape[0] > 16 and grid.std() > 0 and "4 images" in printed
  # Caption a real held-out digit; the CLI's answer must be what the library call gives.
  model = loader.load(tiny_workdir)
  digit = np.zeros((28, 28, 3), np.uint8)
  digit[6:22, 12:16] = 255
  Image.fromarray(digit).save(tmp_path / "one.png")
  caption = _cli("synergen_jax.sample", "--workdir", tiny_workdir, "--image",
                 str(tmp_path / "one.png")).rstrip("\n").split("\n")[-1].strip()   # may be ""
  want = tasks.caption(model, [tasks.image_codes(model, digit)])[0]
  assert caption == want


def test_zero_shot_scores_are_sums_of_next_token_logprobs(tiny_workdir, tiny_data):
  model = loader.load(tiny_workdir)
  rng = np.random.default_rng(0)
  codes = rng.integers(0, model.mc.codebook_size, model.mc.code_grid)
  prompt = model.encode_text(model.config.data.caption_prompt)
  cand = model.encode_text("seven")
  ex = layout_example([Image(codes), Text(prompt), Text(cand, loss=True)], model.mc.fold, model.special)
  got = continuation_scores(model.mc, model.params, [ex], len(ex["text_tokens"]) + 3)[0]
  # The same sum, from per-slot log-probs of the full forward (image slots included).
  batch = stack_rows([pack([ex], len(ex["text_tokens"]), model.mc.fold)])
  out = SynerGenVL(model.mc).apply(model.params, batch)
  np.testing.assert_allclose(got, -float((out["text_nll"] * out["text_weights"]).sum()), rtol=1e-5)
  assert batch["text_weights"][0].sum() == len(cand) + 1      # the candidate and its </s>


def test_evaluate_reports_every_section_and_writes_pictures(tiny_workdir, tmp_path):
  model = loader.load(tiny_workdir)
  report = evaluate(model, str(tmp_path), count=40, per_class=2, cfg_scale=3.0)
  assert report["eval_images"] == 40 and report["seed"] == 0 and report["step"] == 60
  u, g, t = report["understanding"], report["generation"], report["tokenizer"]
  for value in (u["caption_accuracy"], u["zero_shot_accuracy"], g["prompt_accuracy"]):
    assert 0.0 <= value <= 1.0
  assert g["images"] == 20 and len(g["per_class_accuracy"]) == 10
  assert g["judge_accuracy_real"] > 0.8          # the judge itself must be trustworthy
  assert g["frechet_distance_real_floor"] < g["frechet_distance"]
  assert 0.0 < t["mse"] < 0.05
  assert os.path.getsize(tmp_path / "eval_samples.png") > 0
  assert os.path.getsize(tmp_path / "eval_captions.png") > 0


def test_loader_errors_name_the_workdir(tmp_path, tiny_workdir):
  with pytest.raises(ConfigError, match="no config.json"):
    loader.load(str(tmp_path))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(tiny_workdir, "config.json")).read())
  with pytest.raises(ConfigError, match="--workdir=.*no complete checkpoint"):
    loader.load(str(empty))
  # Checkpoints of another model: refused by name, not restored into the wrong shapes.
  import shutil
  other = tmp_path / "other"
  shutil.copytree(tiny_workdir, other)
  config = json.loads((other / "config.json").read_text())
  config["model"]["mlp_dim"] = 48
  (other / "config.json").write_text(json.dumps(config))
  with pytest.raises(ConfigError, match="do not match this model"):
    loader.load(str(other))


def test_named_classes_reads_whole_names_longest_first():
  names = ["t-shirt", "shirt", "seven", "one"]
  assert named_classes("a picture of a t-shirt", names) == {0}
  assert named_classes("this is shirt", names) == {1}
  assert named_classes("someone", names) == set()
  assert named_classes("one, then seven.", names) == {2, 3}


def test_frechet_distance_is_zero_for_equal_sets_and_the_mean_shift_squared():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(500, 6))
  a -= a.mean(0)
  assert abs(judge_lib.frechet_distance(a, a)) < 1e-6
  shift = np.arange(6) * 0.5
  np.testing.assert_allclose(judge_lib.frechet_distance(a + shift, a), shift @ shift, rtol=1e-6)
  # Scaling one set by s changes only the covariance term: tr(S) (1 - s)^2 for isotropic S.
  np.testing.assert_allclose(judge_lib.frechet_distance(2 * a, a),
                             np.trace(np.cov(a, rowvar=False)), rtol=1e-6)
  pts = np.array([[0.0, 0.0], [3.0, 4.0]])
  assert judge_lib.mean_pairwise_distance(pts) == 5.0


def test_frechet_distance_is_fid_s_and_quiet_where_units_never_fire():
  """The judge's sets: ReLU features with units zero in every row (a singular covariance, which
  scipy's sqrtm warns about). The distance is eval/fid.py's, no warning reaches the caller, and the
  dead units add nothing: the distance over the live units alone is the same to 1e-10 (an eigh-based
  form was off by ~2e-8 here, and by 3e-7 on the demo's judge features)."""
  rng = np.random.default_rng(0)
  mix = rng.normal(size=(16, 128))
  a = np.maximum(rng.normal(size=(200, 16)) @ mix, 0)
  b = np.maximum(rng.normal(0.2, 1.1, (300, 16)) @ mix, 0)
  dead = rng.choice(128, 35, replace=False)      # scattered, as the judge's are
  live = np.setdiff1d(np.arange(128), dead)
  a[:, dead] = b[:, dead] = 0
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = judge_lib.frechet_distance(a, b)
    without_dead = judge_lib.frechet_distance(a[:, live], b[:, live])
  stats = [fid.feature_statistics(x) for x in (a, b)]
  assert got == fid.frechet_distance(stats[0].mu, stats[0].sigma, stats[1].mu, stats[1].sigma)
  assert got == pytest.approx(without_dead, rel=1e-10)
  with pytest.raises(DataError, match="at least 2 images, got 1"):
    judge_lib.frechet_distance(a[:1], b)
