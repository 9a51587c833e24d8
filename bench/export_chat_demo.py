"""A demo-size SFT model asked through its chat template, in our framework and as a transformers
export: the same answers, word for word.

  python -m bench.export_chat_demo [--workdir workdirs/export_chat] [--steps 500] [--heldout 100]

1. The demo's image tokenizer (configs/demo.py's data cache entry: built as the demo builds it when
   missing, reused when the demo ran before).
2. Conversations about MNIST-5k digits, InternLM2's chat format (`data.name=chat`): "<image>\\nWhat
   digit is this?" -> "It is a seven." (two question and two answer wordings, by index). Every 10th
   digit is held out of the conversations for scoring; prepare trains the run's SentencePiece with
   the chat pieces.
3. SFT of configs/demo.py's model (stage=sft: everything trains) from scratch for `--steps` steps.
4. The full export (`convert.hf_export`), loaded with AutoModelForCausalLM and AutoProcessor.
5. For each held-out digit, the same question: our greedy answer (`tasks.caption`, chat template,
   stopped at <|im_end|>) and the export's (`processor(images=..., text=...)` then `generate()`,
   cut at <|im_end|>). The table counts identical answers and answers naming the right digit.

Reruns reuse what exists (prepared data, the trained run, the export).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workdirs/export_chat", "where the conversations, the run and the export go")
flags.DEFINE_integer("steps", 500, "SFT steps")
flags.DEFINE_integer("heldout", 100, "held-out digits to ask")

QUESTIONS = ("What digit is this?", "Which number is written here?")
ANSWERS = ("It is {a} {name}.", "This is the digit {name}.")


def write_conversations(folder: str) -> list[tuple[str, int]]:
  """PNGs of every MNIST-5k digit and train.jsonl of the conversations about 9 in 10 of them;
  returns the held-out (png path, label) pairs."""
  from PIL import Image

  from synergen_jax.data.sources import DIGIT_NAMES, article, mnist5k

  source = mnist5k()
  images = os.path.join(folder, "images")
  os.makedirs(images, exist_ok=True)
  records, heldout = [], []
  for i in range(source.size):
    example = source.get(i)
    png = os.path.join(images, f"{i}.png")
    if not os.path.exists(png):
      Image.fromarray(example.image).save(png)
    if i % 10 == 0:
      heldout.append((png, example.label))
      continue
    name = DIGIT_NAMES[example.label]
    records.append(json.dumps({"image": f"images/{i}.png", "conversations": [
        {"from": "human", "value": "<image>\n" + QUESTIONS[i % 2]},
        {"from": "gpt", "value": ANSWERS[(i // 2) % 2].format(a=article(name), name=name)}]}))
  with open(os.path.join(folder, "train.jsonl"), "w") as f:
    f.write("\n".join(records) + "\n")
  return heldout


def train_run(workdir: str) -> tuple[str, dict]:
  """The SFT run on the conversations (prepared with the demo's image tokenizer)."""
  from synergen_jax.core.config import load_config
  from synergen_jax.prepare.cache import ensure_prepared
  from synergen_jax.prepare.writer import prepare
  from synergen_jax.train.loop import train
  from synergen_jax.vq.tokenizer import ImageTokenizer

  heldout = write_conversations(workdir)
  demo = load_config("configs/demo.py:stage=1")     # the entry the demo prepares before stage 1
  vq_dir = os.path.join(os.path.dirname(ensure_prepared(demo)), "vq")
  config = load_config("configs/demo.py:stage=sft")
  config.data.update(name="chat", path=os.path.join(workdir, "train.jsonl"), eval_count=0,
                     tokenizer=None)
  config.vq.workdir = vq_dir
  prepared = os.path.join(workdir, "prepared")
  t0 = time.time()
  if not os.path.exists(os.path.join(prepared, "meta.json")):
    prepare(config, prepared, ImageTokenizer.load(vq_dir, config.vq.encode_batch))
  config.data.path = prepared
  config.train.steps = FLAGS.steps
  run = os.path.join(workdir, "run")
  result = train(config, run)
  return run, dict(heldout=heldout, train_seconds=time.time() - t0, steps=result["step"],
                   final_loss=result["losses"].get(result["step"]))


def ask_both(run: str, out: str, heldout: list[tuple[str, int]]) -> dict:
  import numpy as np
  import transformers
  from PIL import Image

  from synergen_jax.convert import full_export
  from synergen_jax.data.sources import DIGIT_NAMES
  from synergen_jax.infer import chat as chat_lib
  from synergen_jax.infer import loader, tasks
  from synergen_jax.infer.decode import GREEDY

  if not os.path.exists(os.path.join(out, "export.json")):
    full_export.export_full(run, out)
  loaded = loader.load(run)
  assert chat_lib.trained_on_chat(loaded), "the run's prepared data holds no conversations"
  model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
  processor = transformers.AutoProcessor.from_pretrained(out, trust_remote_code=True)
  stops = set(chat_lib.stop_ids(loaded))
  question = QUESTIONS[0]
  pixels = [np.asarray(Image.open(png).convert("RGB")) for png, _ in heldout]
  t0 = time.time()
  ours = tasks.caption(loaded, [tasks.image_codes(loaded, p) for p in pixels], question=question,
                       max_new_tokens=12, sampling=GREEDY, chat=True)
  ours_s = time.time() - t0
  theirs, t0 = [], time.time()
  for p in pixels:
    inputs = processor(images=p, text=question, return_tensors="pt")
    new = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    new = new.tolist()
    theirs.append(processor.batch_decode([new[:next((i for i, t in enumerate(new) if t in stops),
                                                     len(new))]])[0].strip())
  theirs_s = time.time() - t0
  right = lambda answers: sum(DIGIT_NAMES[label] in a.lower().replace(".", " ").split()
                              for a, (_, label) in zip(answers, heldout))
  return dict(asked=len(heldout), same=sum(a == b for a, b in zip(ours, theirs)), right_ours=right(ours),
              right_theirs=right(theirs), ours_s=ours_s, theirs_s=theirs_s,
              examples=[(a, b, DIGIT_NAMES[label]) for a, b, (_, label) in list(zip(ours, theirs, heldout))[:4]])


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  run, trained = train_run(FLAGS.workdir)
  heldout = trained.pop("heldout")                  # sorted by digit, as MNIST-5k is: spread the picks
  heldout = [heldout[i * len(heldout) // FLAGS.heldout] for i in range(min(FLAGS.heldout, len(heldout)))]
  asked = ask_both(run, os.path.join(FLAGS.workdir, "export"), heldout)
  print("| SFT steps | final loss | held-out digits asked | identical answers | right digit, ours "
        "| right digit, export | ours (batched, compile included) | export (generate, one by one) |")
  print("|---|---|---|---|---|---|---|---|")
  print(f"| {trained['steps']} | {trained['final_loss']:.3f} | {asked['asked']} | {asked['same']} "
        f"| {asked['right_ours']} | {asked['right_theirs']} | {asked['ours_s']:.1f} s "
        f"| {asked['theirs_s']:.1f} s |")
  print()
  for a, b, want in asked["examples"]:
    print(f"  {want}: ours {a!r}, export {b!r}")
  with open(os.path.join(FLAGS.workdir, "export_chat.json"), "w") as f:
    json.dump(dict(trained, **asked), f, indent=1)


if __name__ == "__main__":
  app.run(main)
