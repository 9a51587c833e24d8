"""Benchmark suites of `python -m synergen_jax.evaluate --suite ...`: a batch job (infer/jobs.py)
over the benchmark's records, then its scores, merged into an eval.json under the suite's name.

  coco_fid  --captions_from annotations/captions_val2014.json [--count 30000 --seed 0]
            --coco_images val2014/ --inception_weights pt_inception-2015-12-05-6726825d.pth
            the MSCOCO-30k protocol of eval/coco_protocol.py (captions drawn with a fixed seed and
            written next to the report, generation at the tokenizer's size, pytorch-fid's resize,
            reference statistics of the drawn val2014 images computed once and cached); or
            --data prompts.jsonl (a given list) and/or --reference DIR_OR_STATS.npz, used as given
  vqa       --data vqa.jsonl ({"image", "question", "answers"}) [--benchmark vqav2|textvqa|gqa|
            docvqa|chartqa]: the benchmark's official answer rule (eval/benchmarks.py); without
            --benchmark, VQA accuracy, exact match and ANLS
  caption   --data captions.jsonl ({"image", "captions"}): BLEU-1..4 and CIDEr
  fid       --generated DIR_OR_STATS --reference DIR_OR_STATS: FID of two folders, no model

coco_fid and fid take --save_reference_stats FILE.npz: the reference folder's statistics are
written there, and later runs give that file as --reference instead of the folder.

The job's outputs stay in WORKDIR/eval_<suite>/ (images, index), so a stopped evaluation resumes
and the generated images can be looked at. Every result carries its sample count and settings.
With several processes (SYNERGEN_PROCESS_ID / SYNERGEN_NUM_PROCESSES) each runs its share of the
job; process 0 then waits until every share is in the job's index files (jobs.wait_for_job) and
alone scores and writes the report, the others return None once their share is done. Only this
job's items are scored, whatever else the folder holds.
WORKDIR, --out and the folders FID reads may be bucket paths (gs://...).
"""

from __future__ import annotations

import dataclasses
import json
import os

from PIL import Image

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
  """(model, run, index, settings), or None in a process other than 0 once its share is done: the
  job runs (or resumes) this process's share; process 0 then waits until every process's share is
  in the index (jobs.wait_for_job) and alone scores. `settings.chat` is resolved from the workdir
  when unset (a run trained on conversations is asked through its chat template), so the report
  says which. `index` holds this job's items only, in the records' order."""
  model = loader.load(workdir, mesh=loader.local_mesh(fsdp))
  settings = dataclasses.replace(settings, chat=tasks.use_chat(model, settings.chat))
  out_dir = _out_dir(workdir, suite)
  run = jobs.run_job(model, data, out_dir, settings, log=log)
  process, count = jobs.process_share()
  if process != 0:
    log(f"evaluate: process {process} of {count} finished its share; process 0 scores")
    return None
  index = jobs.wait_for_job(out_dir, data, settings, log=log)
  return model, run, index, settings


def _out_dir(workdir: str, suite: str) -> str:
  return os.fspath(storage.path(workdir, "--workdir") / f"eval_{suite}")


def _settings(settings: jobs.JobSettings) -> dict:
  out = dataclasses.asdict(settings)
  out["sampling"], out["answer_sampling"] = str(settings.sampling), str(settings.answer_sampling)
  return out


def coco_fid(workdir: str, data: str | None, reference: str | None, inception_weights: str | None,
             settings: jobs.JobSettings, fsdp: int = 1, log=print,
             save_reference: str | None = None, *, captions_from: str | None = None,
             count: int = 0, coco_images: str | None = None, out: str | None = None,
             extractor=None) -> dict | None:
  """FID of images generated for COCO captions, under the protocol of eval/coco_protocol.py.

  Captions: drawn from `captions_from` (an MSCOCO captions file: `count` images, seed
  settings.seed) and written next to `out` (default WORKDIR/eval.json), or the prompts of `data`.
  Reference: `reference` (a folder or .npz, as given) or the drawn images under `coco_images`,
  whose statistics are cached next to `out`. Every input is checked before the model loads.
  `extractor` stands in for the Inception network (tests). None in processes other than 0."""
  from synergen_jax.eval import coco_protocol, fid
  report_dir = storage.path(out or os.fspath(storage.path(workdir, "--workdir") / "eval.json"),
                            "--out").parent
  if (data is None) == (captions_from is None):
    raise DataError("coco_fid takes its captions from --captions_from (drawn) or --data (a list), "
                    "one of the two")
  if (reference is None) == (coco_images is None):
    raise DataError("coco_fid compares with --reference (a folder or .npz) or with the drawn "
                    "images under --coco_images, one of the two")
  if save_reference and (reference is None or reference.endswith(".npz")
                         or not save_reference.endswith(".npz")):
    raise DataError(f"--save_reference_stats {save_reference}: takes a .npz path, and writes the "
                    "statistics of a --reference folder (drawn images are cached by themselves)")
  if extractor is None and not inception_weights:
    raise DataError("coco_fid needs the Inception weights: pytorch-fid's "
                    "pt_inception-2015-12-05-6726825d.pth (--inception_weights)")
  if captions_from is not None:
    count = count or coco_protocol.DEFAULT_COUNT
    records = coco_protocol.draw_captions(captions_from, count, settings.seed)
    data = os.fspath(report_dir / coco_protocol.CAPTIONS_FILE)
    # Every process draws the same list; each writes it whole (identical bytes), before its job.
    coco_protocol.write_records(records, data)
    source = dict(captions_from=captions_from, count=count, seed=settings.seed,
                  draw="sha256 ranking of image ids, one caption per image", captions_file=data)
  else:
    kind, records = jobs.read_records(data)
    if kind != jobs.GENERATE:
      raise DataError(f"{data}: coco_fid needs {{\"prompt\": caption}} records, not image records")
    source = dict(captions_file=data, count=len(records))
  if coco_images is not None:
    ref_files = coco_protocol.reference_files(records, coco_images, data)
  elif not reference.endswith(".npz"):
    fid.image_files(reference)                  # a folder with images, or a clear error now
  job = _job(workdir, "coco_fid", data, settings, fsdp, log)
  if job is None:
    return None
  model, run, index, settings = job
  generated = [os.fspath(storage.path(_out_dir(workdir, "coco_fid")) / e["file"])
               for e in index.values()]
  with storage.path(generated[0]).open("rb") as f, Image.open(f) as first:
    size = (first.height, first.width)
  if extractor is None:
    from synergen_jax.eval.inception import load_pt_inception
    extractor = fid.FeatureExtractor(load_pt_inception(inception_weights), batch_size=50)
  ours = fid.files_statistics(generated, extractor)
  reference_info = dict(reference=reference)
  if coco_images is not None:
    key = coco_protocol.reference_key(records, size, inception_weights)
    cache = os.fspath(report_dir / f"coco_fid_reference_{key}.npz")
    cached = storage.path(cache).exists()
    if cached:
      theirs = fid.read_statistics(cache)
    else:
      theirs = fid.files_statistics(ref_files, extractor, coco_protocol.reference_reader(size))
      fid.write_statistics(cache, theirs)
    reference_info = dict(coco_images=coco_images, reference_stats=cache, cached=cached,
                          reference_resize=coco_protocol.REFERENCE_RESIZE)
  elif reference.endswith(".npz"):
    theirs = fid.read_statistics(reference)
  else:
    theirs = fid.files_statistics(fid.image_files(reference), extractor)
    if save_reference:
      fid.write_statistics(save_reference, theirs)
      reference_info["saved_reference_stats"] = save_reference
  protocol = dict(source, generation_size=list(size), per_prompt=settings.num,
                  inception_resize=coco_protocol.INCEPTION_RESIZE, **reference_info)
  return dict(fid=fid.frechet_distance(ours.mu, ours.sigma, theirs.mu, theirs.sigma),
              generated_count=ours.count, reference_count=theirs.count, protocol=protocol,
              step=model.step, data=data, images=len(index), settings=_settings(settings),
              images_per_second=run["per_second"])


def vqa(workdir: str, data: str, settings: jobs.JobSettings, fsdp: int = 1, log=print,
        benchmark: str | None = None) -> dict | None:
  """Answers to the records scored by the benchmark's official rule (eval/benchmarks.py), or, with
  no benchmark, the generic trio (VQA accuracy, exact match, ANLS). None in processes other than 0."""
  from synergen_jax.eval import benchmarks
  from synergen_jax.eval import vqa as vqa_scores
  if benchmark is not None and benchmark not in benchmarks.BENCHMARKS:
    raise DataError(f"--benchmark {benchmark!r}: one of {', '.join(benchmarks.BENCHMARKS)}")
  rule = benchmarks.BENCHMARKS.get(benchmark)
  # Refuses bad records (and, for VQAv2 / TextVQA, a count other than 10) before any decoding.
  vqa_scores.read_vqa_records(data, rule.answers if rule else None)
  job = _job(workdir, "vqa", data, settings, fsdp, log)
  if job is None:
    return None
  model, run, index, settings = job
  pairs = [(entry["answer"], entry["answers"]) for entry in index.values()]
  numbers = (benchmarks.scores(pairs, benchmark) if benchmark else
             dict(vqa_scores.scores(pairs), rule=GENERIC_VQA_RULE))
  return dict(numbers, step=model.step, data=data, settings=_settings(settings),
              answers_per_second=run["per_second"])


GENERIC_VQA_RULE = ("no --benchmark: accuracy is VQA accuracy (vqaEval.py; fewer than 10 answers: "
                    "min(1, matches / min(3, n))), exact_match after its normalisation, anls "
                    "DocVQA's")


def caption(workdir: str, data: str, settings: jobs.JobSettings, fsdp: int = 1,
            log=print) -> dict | None:
  from synergen_jax.eval import captions
  captions.read_caption_records(data)
  job = _job(workdir, "caption", data, settings, fsdp, log)
  if job is None:
    return None
  model, run, index, settings = job
  generated = {entry["id"]: entry["answer"] for entry in index.values()}
  references = {entry["id"]: entry["captions"] for entry in index.values()}
  return dict(captions.scores(generated, references), step=model.step, data=data,
              settings=_settings(settings), captions_per_second=run["per_second"])
