"""Benchmark suites of `python -m synergen_jax.evaluate --suite ...`: a batch job (infer/jobs.py)
over the benchmark's records, then its scores, merged into an eval.json under the suite's name.

  coco_fid  --data prompts.jsonl ({"prompt": caption} per line, e.g. 30k MSCOCO val captions)
            --reference DIR_OR_STATS.npz --inception_weights pt_inception-2015-12-05-6726825d.pth
            images generated for the captions, FID against the reference (eval/fid.py)
  vqa       --data vqa.jsonl ({"image", "question", "answers"}): VQA accuracy, exact match, ANLS
  caption   --data captions.jsonl ({"image", "captions"}): BLEU-1..4 and CIDEr
  fid       --generated DIR_OR_STATS --reference DIR_OR_STATS: FID of two folders, no model

coco_fid and fid take --save_reference_stats FILE.npz: the reference folder's statistics are
written there, and later runs give that file as --reference instead of the folder.

The job's outputs stay in WORKDIR/eval_<suite>/ (images, index), so a stopped evaluation resumes
and the generated images can be looked at. Every result carries its sample count and settings.
WORKDIR, --out and the folders FID reads may be bucket paths (gs://...).
"""

from __future__ import annotations

import dataclasses
import json
import os

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.infer import jobs, loader, tasks

SUITES = ("coco_fid", "vqa", "caption", "fid")


def merge_into(path: str, key: str, result: dict) -> dict:
  """Writes result under `key` into the JSON object at path (kept: the other keys), whole or not
  at all (a local file or a bucket object)."""
  target = storage.path(path, "--out")
  report = json.loads(target.read_text()) if target.exists() else {}
  report[key] = result
  storage.write_text(target, json.dumps(report, indent=1))
  return report


def _job(workdir: str, suite: str, data: str, settings: jobs.JobSettings, fsdp: int, log):
  """(model, out_dir, run, index, settings): `settings.chat` resolved from the workdir when unset
  (a run trained on conversations is asked through its chat template), so the report says which."""
  model = loader.load(workdir, mesh=loader.local_mesh(fsdp))
  settings = dataclasses.replace(settings, chat=tasks.use_chat(model, settings.chat))
  out_dir = os.fspath(storage.path(workdir, "--workdir") / f"eval_{suite}")
  run = jobs.run_job(model, data, out_dir, settings, log=log)
  return model, out_dir, run, jobs.read_index(out_dir), settings


def _settings(settings: jobs.JobSettings) -> dict:
  out = dataclasses.asdict(settings)
  out["sampling"], out["answer_sampling"] = str(settings.sampling), str(settings.answer_sampling)
  return out


def coco_fid(workdir: str, data: str, reference: str, inception_weights: str,
             settings: jobs.JobSettings, fsdp: int = 1, log=print,
             save_reference: str | None = None) -> dict:
  from synergen_jax.eval import fid
  kind, _ = jobs.read_records(data)
  if kind != jobs.GENERATE:
    raise DataError(f"{data}: coco_fid needs {{\"prompt\": caption}} records, not image records")
  model, out_dir, run, _, settings = _job(workdir, "coco_fid", data, settings, fsdp, log)
  scores = fid.fid_between(os.fspath(storage.path(out_dir) / "images"), reference, inception_weights,
                           save_reference=save_reference)
  return dict(scores, step=model.step, data=data, images=run["items"], settings=_settings(settings),
              images_per_second=run["per_second"])


def vqa(workdir: str, data: str, settings: jobs.JobSettings, fsdp: int = 1, log=print) -> dict:
  from synergen_jax.eval import vqa as vqa_scores
  vqa_scores.read_vqa_records(data)                  # refuses bad records before any decoding
  model, _, run, index, settings = _job(workdir, "vqa", data, settings, fsdp, log)
  pairs = [(entry["answer"], entry["answers"]) for entry in index.values()]
  return dict(vqa_scores.scores(pairs), step=model.step, data=data, settings=_settings(settings),
              answers_per_second=run["per_second"])


def caption(workdir: str, data: str, settings: jobs.JobSettings, fsdp: int = 1, log=print) -> dict:
  from synergen_jax.eval import captions
  captions.read_caption_records(data)
  model, _, run, index, settings = _job(workdir, "caption", data, settings, fsdp, log)
  generated = {entry["id"]: entry["answer"] for entry in index.values()}
  references = {entry["id"]: entry["captions"] for entry in index.values()}
  return dict(captions.scores(generated, references), step=model.step, data=data,
              settings=_settings(settings), captions_per_second=run["per_second"])
