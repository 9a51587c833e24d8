"""SynerGen-VL's data, stage by stage: the sources, the format each is read in, its task and weight.

configs/synergen_vl_2b.py reads this file. Each source is one mixture component: prepared on its own
(its own format, files and task mix), then mixed by weight at training time:

  # what a stage expects on disk, and what is there (no encoding):
  python -m synergen_jax.prepare --config configs/synergen_vl_2b.py:stage=1,raw=gs://b/raw \\
      --vq_workdir tok/emu3 --out gs://b/prep/s1 --check
  # prepare one component (one job per component, any number of hosts each):
  python -m synergen_jax.prepare --config configs/synergen_vl_2b.py:stage=1,raw=gs://b/raw,component=laion_aesthetics \\
      --vq_workdir tok/emu3 --out gs://b/prep/s1/laion_aesthetics --config.data.tokenizer=ckpt/internlm2/hf_files \\
      --config.data.code_cache=gs://b/codes
  # train on the stage's mixture of prepared components:
  python -m synergen_jax.train --config configs/synergen_vl_2b.py:stage=1,prepared=gs://b/prep/s1 --workdir ...

The paper (arXiv 2412.09604, Sec. 4 and Tab. 8) names the sources and the prompts; it gives no
per-source sampling ratios. Ours, stated here once: each stage is half generation and half
understanding by examples, split evenly over the sources of each half (SFT: the InternVL-1.5 SFT
mix takes the understanding half). S2's and SFT's generation data are not itemised in the paper; we
keep S1's generation sources there. The image tiles per stage are the config's (`data.max_tiles`:
1, 6 and 12, plus a thumbnail); the code cache (`data.code_cache`) lets S2 and SFT reuse S1's codes.

`raw` is the root the files below are found under. How each arrives there:

  webdataset  URL lists (parquet: url + caption) downloaded with img2dataset into tar shards
              (docs/data.md#images-from-urls), or SA-1B's own tars re-keyed with their captions
  jsonl       {"image": path, "text": caption} per line (ImageNet-1k: the class name as caption)
  chat        LLaVA / InternVL conversation jsonl, `<image>` placeholders, image paths relative to it
"""

import dataclasses

from synergen_jax.core.errors import ConfigError

GENERATION_PROMPT = "Generate an image of:"
CAPTION_PROMPT = "Provide a one-sentence caption for the image"


@dataclasses.dataclass(frozen=True)
class Source:
  name: str          # the component's name: `component=NAME`, and its prepared folder
  task: str          # generation, caption or chat
  format: str        # config.data.name the files are read as
  files: str         # pattern under the raw root (globs and brace ranges)
  weight: float      # relative sampling weight in the stage's mixture (ours: see the docstring)
  what: str          # the dataset, as the paper names it


def _half(sources, total=1.0):
  return [dataclasses.replace(s, weight=total / len(sources)) for s in sources]


S1_GENERATION = _half([
    Source("laion_aesthetics", "generation", "webdataset", "laion_aesthetics/*.tar", 0,
           "LAION-Aesthetics"),
    Source("megalith", "generation", "webdataset", "megalith/*.tar", 0, "Megalith-10M"),
    Source("sam_generation", "generation", "webdataset", "sam_captioned/*.tar", 0,
           "SAM (SA-1B) with synthetic captions"),
    Source("objects365", "generation", "jsonl", "objects365/captions.jsonl", 0, "Objects365"),
    Source("imagenet1k", "generation", "jsonl", "imagenet1k/train.jsonl", 0, "ImageNet-1k"),
])
S1_UNDERSTANDING = _half([
    Source("laion_en", "caption", "webdataset", "laion_en/*.tar", 0, "LAION-En"),
    Source("coyo", "caption", "webdataset", "coyo700m/*.tar", 0, "COYO-700M"),
    Source("sam_caption", "caption", "webdataset", "sam_captioned/*.tar", 0,
           "SAM (SA-1B) with synthetic captions"),
])
S2_UNDERSTANDING = [Source("internvl15_pretrain", "chat", "chat", "internvl15_pretrain/*.jsonl",
                           1.0, "InternVL-1.5 pre-training mix")]
SFT_UNDERSTANDING = [Source("internvl15_sft", "chat", "chat", "internvl15_sft/*.jsonl", 1.0,
                            "InternVL-1.5 SFT mix")]

STAGES = {"1": S1_GENERATION + S1_UNDERSTANDING,
          "2": S1_GENERATION + S2_UNDERSTANDING,
          "sft": S1_GENERATION + SFT_UNDERSTANDING}

# config.data.tasks per task: examples written per image (or per document for chat).
TASKS = {"generation": dict(caption=0.0, generation=1.0, interleaved=0.0),
         "caption": dict(caption=1.0, generation=0.0, interleaved=0.0),
         "chat": dict(caption=0.0, generation=0.0, interleaved=0.0)}


def sources(stage: str) -> list:
  if stage not in STAGES:
    raise ConfigError(f"stage {stage!r}: the recipe has {sorted(STAGES)}")
  return STAGES[stage]


def source(stage: str, name: str) -> Source:
  by_name = {s.name: s for s in sources(stage)}
  if name not in by_name:
    raise ConfigError(f"component={name!r} is not a stage-{stage} source; the stage has "
                     f"{', '.join(by_name)}")
  return by_name[name]


def apply_component(config, stage: str, name: str, raw: str) -> None:
  """Sets config.data to prepare one source: its format, files under `raw`, task mix, prompts."""
  s = source(stage, name)
  config.data.update(name=s.format, path=f"{raw.rstrip('/')}/{s.files}",
                     generation_prompt=GENERATION_PROMPT, caption_prompt=CAPTION_PROMPT)
  config.data.tasks.update(**TASKS[s.task])


def mixture(stage: str, prepared: str) -> tuple:
  """The stage's training mixture: ((prepared/<name>, weight), ...)."""
  return tuple((f"{prepared.rstrip('/')}/{s.name}", s.weight) for s in sources(stage))
