"""Evaluation of a trained workdir: understanding, generation and the image tokenizer, one report
(`evaluate_workdir` writes it to DIR/eval.json; `python -m synergen_jax.evaluate` is its CLI). DIR
may be a bucket path (gs://...): every file is written whole or not at all (core/storage.py).

The held-out images are the seeded split every stage holds out (data.sources.split_indices: the
image tokenizer, prepare and the trainer never train on them), read again from the raw source.

understanding  caption_accuracy: greedy captions that name the image's class and no other class
               (class datasets) - the reference captions use random templates ("a seven", "this is
               seven"), so exact match is reported too but caps near chance over templates;
               zero_shot_accuracy: the class whose name, as the caption, has the highest likelihood.
generation     prompt_accuracy: share of images generated for "<generation prompt> <class name>" that
               the judge (eval/judge.py, trained on the real training images) puts in that class;
               frechet_distance in the judge's feature space to the real held-out images, next to the
               same distance for as many real training images (the floor at this sample size);
               diversity: mean within-class pairwise feature distance, generated and real.
tokenizer      reconstruction MSE (pixels in [0, 1]) and PSNR on the held-out images.
"""

from __future__ import annotations

import json
import os
import re
import time

import numpy as np

from synergen_jax.core import storage
from synergen_jax.data import images as image_ops
from synergen_jax.prepare.cache import cache_root
from synergen_jax.data.layout import Image, Text, layout_example
from synergen_jax.data.decoding import FitSettings, decode_pairs
from synergen_jax.data.sources import open_source, split_indices
from synergen_jax.eval import judge as judge_lib
from synergen_jax.infer import tasks
from synergen_jax.infer.decode import Sampling
from synergen_jax.infer import loader
from synergen_jax.infer.loader import Loaded
from synergen_jax.infer.scoring import continuation_scores


def named_classes(text: str, names) -> set[int]:
  """Indices of the class names a caption mentions as whole words (longest names first, so
  "t-shirt" is not also read as "shirt")."""
  text, found = " " + text.lower() + " ", set()
  for i in sorted(range(len(names)), key=lambda i: -len(names[i])):
    pattern = r"(?<![\w-])" + re.escape(names[i].lower()) + r"(?![\w-])"
    if re.search(pattern, text):
      found.add(i)
      text = re.sub(pattern, " ", text)
  return found


def _normalise(text: str) -> str:
  return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def _understanding(loaded: Loaded, tile_codes, captions_ref, labels, names, batch_size) -> dict:
  captions = tasks.caption(loaded, tile_codes, batch_size=batch_size)
  out = dict(caption_exact_match=float(np.mean([_normalise(a) == _normalise(b)
                                                for a, b in zip(captions, captions_ref)])))
  if names:
    out["caption_accuracy"] = float(np.mean([named_classes(c, names) == {int(y)}
                                             for c, y in zip(captions, labels)]))
    prompt = loaded.encode_text(loaded.config.data.caption_prompt)
    candidates = [loaded.encode_text(n) for n in names]
    examples = [layout_example([Image(c) for c in codes] + [Text(prompt), Text(cand, loss=True)],
                               loaded.mc.fold, loaded.special)
                for codes in tile_codes for cand in candidates]
    length = max(len(e["text_tokens"]) for e in examples)
    scores = continuation_scores(loaded.mc, loaded.params, examples, length).reshape(len(labels), -1)
    out["zero_shot_accuracy"] = float(np.mean(scores.argmax(-1) == np.asarray(labels)))
  return out, captions


def _generation(loaded: Loaded, judge, names, real_eval, real_train, per_class, cfg_scale, sampling,
                seed, batch_size):
  labels = np.repeat(np.arange(len(names)), per_class)
  pixels = tasks.generate(loaded, [names[y] for y in labels], cfg_scale=cfg_scale, sampling=sampling,
                          seed=seed, batch_size=batch_size)
  pred, feats = judge(pixels)
  eval_pixels, eval_labels = real_eval
  _, real_feats = judge(eval_pixels)
  rng = np.random.default_rng(seed)
  train_pick = rng.choice(len(real_train), min(len(pixels), len(real_train)), replace=False)
  _, floor_feats = judge(real_train[train_pick])
  div = lambda f, y: float(np.mean([judge_lib.mean_pairwise_distance(f[y == c])
                                    for c in range(len(names)) if np.sum(y == c) > 1]))
  return dict(prompt_accuracy=float(np.mean(pred == labels)),
              frechet_distance=judge_lib.frechet_distance(feats, real_feats),
              frechet_distance_real_floor=judge_lib.frechet_distance(floor_feats, real_feats),
              diversity=div(feats, labels), diversity_real=div(real_feats, np.asarray(eval_labels)),
              per_class_accuracy=[float(np.mean(pred[labels == c] == c)) for c in range(len(names))],
              images=int(len(pixels)), cfg_scale=cfg_scale, temperature=sampling.temperature,
              top_k=sampling.top_k, top_p=sampling.top_p), pixels


def open_split(loaded: Loaded, source_path: str | None = None):
  """(source, FitSettings, train indices, held-out indices) of the data a workdir was trained on:
  the seeded split every stage holds out, with the records fitted as training fitted them.

  `source_path`: the raw jsonl file / image folder of `jsonl` and `folder` sources (a workdir's
  config.data.path names the prepared data, not the raw files)."""
  d = loaded.config.data
  source_config = d.copy_and_resolve_references()
  source_config.path = source_path
  if d.name in ("jsonl", "folder") and not source_path:
    raise ValueError(f"evaluate: config.data.name={d.name!r} reads raw files; pass their location "
                     "with --source_path")
  source = open_source(source_config)
  train_idx, eval_idx = split_indices(len(source), d.eval_count, d.seed)
  settings = FitSettings.from_config(loaded.config, loaded.image_tokenizer.image_size,
                                     source.background)
  return source, settings, train_idx, eval_idx


def evaluate(loaded: Loaded, out_dir: str | None = None, *, count: int | None = None,
             per_class: int = 10, cfg_scale: float = 7.5, sampling: Sampling = Sampling(),
             seed: int = 0, batch_size: int = 128, source_path: str | None = None) -> dict:
  """Runs every section; writes eval_samples.png and eval_captions.png into out_dir when given.

  `source_path`: the raw jsonl file / image folder of `jsonl` and `folder` sources (a workdir's
  config.data.path names the prepared data, not the raw files)."""
  t0 = time.time()
  config, tok = loaded.config, loaded.image_tokenizer
  d = config.data
  source, settings, train_idx, eval_idx = open_split(loaded, source_path)
  if count and count < len(eval_idx):   # a seeded subset: sources are often stored sorted by class
    eval_idx = np.sort(np.random.default_rng(d.seed).choice(eval_idx, count, replace=False))
  real, skipped = decode_pairs(source, eval_idx, settings)
  if not real:
    raise ValueError(f"evaluate: no usable held-out records in {source.name}: {dict(skipped)}")
  eval_pixels = np.stack([p.gen for p in real])
  real_captions, real_labels = [p.caption for p in real], [p.label for p in real]
  report = dict(step=loaded.step, seed=seed, eval_images=len(real), source=source.name)

  codes = tok.encode(eval_pixels)
  recon = tok.decode(codes).astype(np.float32) / 255.0
  mse = float(np.mean((recon - eval_pixels.astype(np.float32) / 255.0) ** 2))
  report["tokenizer"] = dict(mse=mse, psnr_db=float(10 * np.log10(1.0 / max(mse, 1e-12))))

  if d.max_tiles > 1:
    tile_codes = [list(tok.encode(np.stack(p.tiles))) for p in real]
  else:
    tile_codes = [[c] for c in codes]
  names = list(source.class_names)
  report["understanding"], captions = _understanding(loaded, tile_codes, real_captions, real_labels,
                                                     names, batch_size)
  if out_dir:   # 32 images spread over the split (class sources are often stored sorted by class)
    show = np.linspace(0, len(captions) - 1, min(32, len(captions))).astype(int)
    image_ops.save_captioned(eval_pixels[show], [captions[i] for i in show],
                             os.fspath(storage.path(out_dir) / "eval_captions.png"))

  if names:
    train, _ = decode_pairs(source, train_idx, settings)
    train_pixels = np.stack([p.gen for p in train])
    judges = os.fspath(storage.path(cache_root(config)) / "judges")
    judge = judge_lib.load_or_train(judges, train_pixels, np.asarray([p.label for p in train]),
                                    len(names))
    judged, _ = judge(eval_pixels)
    report["generation"], pixels = _generation(
        loaded, judge, names, (eval_pixels, real_labels), train_pixels, per_class, cfg_scale,
        sampling, seed, batch_size)
    report["generation"]["judge_accuracy_real"] = float(np.mean(judged == np.asarray(real_labels)))
    if out_dir:
      image_ops.save_grid(pixels, os.fspath(storage.path(out_dir) / "eval_samples.png"),
                          cols=per_class)
  else:
    report["generation"] = dict(skipped=f"{source.name} has no class labels to judge prompts by")
  report["seconds"] = round(time.time() - t0, 1)
  return report


def evaluate_workdir(workdir: str, **settings) -> dict:
  """Loads a trained workdir, evaluates it (`settings`: the keyword arguments of `evaluate`) and
  writes DIR/eval.json (keeping the benchmark suites' numbers there: eval/suites.py),
  DIR/eval_samples.png and DIR/eval_captions.png; returns the report."""
  report = evaluate(loader.load(workdir), workdir, **settings)
  path = storage.path(workdir, "--workdir") / "eval.json"
  kept = {}
  if path.exists():
    kept = {k: v for k, v in json.loads(path.read_text()).items() if k not in report}
  storage.write_text(path, json.dumps({**report, **kept}, indent=1))
  return report


def format_table(report: dict) -> str:
  """The report as an aligned text table (the CLI prints it)."""
  rows = [("held-out images", report["eval_images"]), ("seed", report["seed"]),
          ("step", report["step"])]
  for section in ("understanding", "generation", "tokenizer"):
    for k, v in report.get(section, {}).items():
      if isinstance(v, list):
        v = " ".join(f"{x:.2f}" for x in v)
      elif isinstance(v, float):
        v = f"{v:.4g}"
      rows.append((f"{section}/{k}", v))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
