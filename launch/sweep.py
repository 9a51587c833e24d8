"""Runs a sweep (configs/sweeps/*.py) point by point, or prints each point's commands for a cluster,
then aggregates DIR/summary.csv and DIR/summary.png.

  python launch/sweep.py --sweep configs/sweeps/fold_ratio.py[:runlocal] --workdir DIR [--print_only]
      [--config configs/demo.py[:arg]] [--config.train.steps=...] [--plan v5p-128]

A sweep file's get_sweep(arg) returns `config` (a config file), `points` (name, the config's
get_config argument, dotted `overrides`) and `evaluate`: the class report's settings (count,
per_class, cfg_scale, top_k), or `suites` (a list of {suite, data, and for coco_fid reference and
inception_weights}) with cfg_scale and top_k, each run as `python -m synergen_jax.evaluate --suite`. `--config`
replaces the sweep's config file (its argument is merged with each point's), and `--config.a.b=v`
overrides apply to every point before the point's own overrides. Locally each
point trains into DIR/<name> (rerunning resumes; a finished point is not retrained) and is
evaluated into DIR/<name>/eval.json. With --print_only the train and evaluate commands are printed
instead, one line each, for launch scripts or a scheduler; aggregate later with --summarize_only.
With --plan TARGET (a planner target: v5p-128, h100:8x8, ...) nothing runs: each point's predicted
memory, step time, hours and cost on that target are printed, for the point's layout and for the
cheapest layout that fits (synergen_jax/planning/planner.py).
"""

from __future__ import annotations

import csv
import json
import os

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.core.config import load_config, load_module

COLUMNS = ("point", "fold", "steps", "final_loss", "loss_text", "loss_image", "examples_per_sec",
           "tokens_per_sec", "caption_accuracy", "zero_shot_accuracy", "prompt_accuracy",
           "frechet_distance", "eval_images", "seed")


def load_sweep(spec: str, config: str | None = None, overrides: dict | None = None):
  """The sweep of `spec`; `config` replaces its config file, `overrides` go into every point."""
  path, _, arg = spec.partition(":")
  sweep = load_module(path, "sweep file").get_sweep(arg or None)
  if config:
    sweep.config = config
  for point in sweep.points:
    point["overrides"] = {**(overrides or {}), **point["overrides"]}
  return sweep


def point_spec(sweep, point) -> str:
  return cli.with_args(sweep.config, point["arg"])


def point_config(sweep, point):
  return cli.apply_overrides(load_config(point_spec(sweep, point)), point["overrides"],
                             f"sweep point {point['name']}: override ")


def commands(sweep, point, workdir: str) -> list[str]:
  flags_ = " ".join(f"--config.{k}={v}" for k, v in point["overrides"].items())
  e = sweep.evaluate
  train = (f"python -m synergen_jax.train --config {point_spec(sweep, point)} --workdir "
           f"{workdir} {flags_}".strip())
  if "suites" in e:
    return [train] + [
        f"python -m synergen_jax.evaluate --workdir {workdir} --suite {s['suite']} --data {s['data']}"
        + "".join(f" --{k} {s[k]}" for k in ("reference", "inception_weights") if k in s)
        + f" --cfg {e['cfg_scale']} --top_k {e['top_k']}" for s in e["suites"]]
  return [train, f"python -m synergen_jax.evaluate --workdir {workdir} --count {e['count']} "
                 f"--per_class {e['per_class']} --cfg {e['cfg_scale']} --top_k {e['top_k']}"]


def run_point(sweep, point, workdir: str) -> None:
  from synergen_jax.infer.decode import Sampling
  from synergen_jax.eval.report import evaluate_workdir
  from synergen_jax.train.loop import train

  train(point_config(sweep, point), workdir)
  e = sweep.evaluate
  if "suites" not in e:
    evaluate_workdir(workdir, count=e["count"], per_class=e["per_class"], cfg_scale=e["cfg_scale"],
                     sampling=Sampling(top_k=e["top_k"]))
    return
  from synergen_jax.eval import suites
  from synergen_jax.infer.jobs import JobSettings
  settings = JobSettings(cfg_scale=e["cfg_scale"], sampling=Sampling(top_k=e["top_k"]))
  out = os.path.join(workdir, "eval.json")
  for s in e["suites"]:
    if s["suite"] == "coco_fid":
      result = suites.coco_fid(workdir, s["data"], s["reference"], s["inception_weights"], settings)
    else:
      result = getattr(suites, s["suite"])(workdir, s["data"], settings)
    suites.merge_into(out, s["suite"], result)


# Suite numbers that describe the run rather than the model: left out of the summary.
NOT_SCORES = ("step", "images", "images_per_second", "answers_per_second", "captions_per_second")


def suite_scores(report: dict, names) -> dict | None:
  """{"<suite>/<score>": value} of every numeric top-level score of the named suites in eval.json;
  None while a suite has not run."""
  if not all(n in report for n in names):
    return None
  return {f"{n}/{k}": v for n in names for k, v in report[n].items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_SCORES}


def summary_row(name: str, workdir: str, suites=()) -> dict | None:
  """One CSV row from a finished point's metrics.jsonl, config.json and eval.json (None if missing):
  the class report's numbers, or with `suites` (names) those suites' scores."""
  paths = [os.path.join(workdir, f) for f in ("metrics.jsonl", "config.json", "eval.json")]
  if not all(os.path.exists(p) for p in paths):
    return None
  rows = [json.loads(line) for line in open(paths[0])]
  train_rows = [r for r in rows if "loss" in r]
  timed = train_rows[1:] or train_rows           # the first window includes compilation
  config, report = json.load(open(paths[1])), json.load(open(paths[2]))
  last = train_rows[-1]
  mean = lambda k: sum(r[k] for r in timed) / len(timed)
  row = dict(point=name, fold="x".join(map(str, config["model"]["fold"])), steps=last["step"],
             final_loss=last["loss"], loss_text=last["loss/text"], loss_image=last["loss/image"],
             examples_per_sec=mean("examples_per_sec"), tokens_per_sec=mean("tokens_per_sec"))
  if suites:
    scores = suite_scores(report, suites)
    return None if scores is None else {**row, **scores}
  u, g = report["understanding"], report.get("generation", {})
  return dict(row, caption_accuracy=u.get("caption_accuracy"),
              zero_shot_accuracy=u.get("zero_shot_accuracy"),
              prompt_accuracy=g.get("prompt_accuracy"), frechet_distance=g.get("frechet_distance"),
              eval_images=report["eval_images"], seed=report["seed"])


def write_summary(rows: list[dict], directory: str) -> None:
  columns = list(COLUMNS) + sorted({k for r in rows for k in r} - set(COLUMNS))
  with open(os.path.join(directory, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = [r["fold"] for r in rows]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  axes[0].bar(labels, [r["examples_per_sec"] for r in rows])
  axes[0].set_title("training examples / s")
  for key in ("final_loss", "loss_text", "loss_image"):
    axes[1].plot(labels, [r[key] for r in rows], marker="o", label=key)
  axes[1].set_title("final training loss")
  scores = [k for k in rows[0] if "/" in k and "fid" not in k]    # suites: accuracies, CIDEr...
  for key in scores or ("caption_accuracy", "zero_shot_accuracy", "prompt_accuracy"):
    values = [r.get(key) for r in rows]
    if all(v is not None for v in values):
      axes[2].plot(labels, values, marker="o", label=key)
  if scores:
    axes[2].set_title("benchmark suites")
  else:
    axes[2].set_title(f"evaluation ({rows[0]['eval_images']} held-out, seed {rows[0]['seed']})")
    axes[2].set_ylim(0, 1)
  for ax in axes:
    ax.set_xlabel("fold ratio")
  for ax in axes[1:]:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(directory, "summary.png"), dpi=100)
  plt.close(fig)


def plan_lines(sweep, target: str) -> list[str]:
  """One line per point: the planner's time and cost for its configured layout and the best one."""
  from synergen_jax.planning.planner import summarize
  lines = []
  for point in sweep.points:
    s = summarize(point_config(sweep, point), target)
    c, b = s["configured"], s["best"]
    best = (f"best {b['layout']}: {b['step_seconds']:.3g} s/step, {b['hours']:.3g} h, "
            f"${b['cost']:,.0f}" if b else "nothing fits")
    lines.append(f"{point['name']}: {target} {s['steps']} steps; as configured "
                 f"{'fits' if c['fits'] else 'DOES NOT FIT'} {c['predicted_gib_per_chip']} GiB/chip, "
                 f"{c['step_seconds']:.3g} s/step, {c['hours']:.3g} h, ${c['cost']:,.0f}; {best}")
  return lines


def sweep_main(spec: str, directory: str, print_only: bool = False, summarize_only: bool = False,
               config: str | None = None, overrides: dict | None = None, plan: str | None = None):
  sweep = load_sweep(spec, config, overrides)
  if plan:
    print("\n".join(plan_lines(sweep, plan)))
    return []
  names = [s["suite"] for s in sweep.evaluate.get("suites", ())]
  os.makedirs(directory, exist_ok=True)
  rows = []
  for point in sweep.points:
    workdir = os.path.join(directory, point["name"])
    if print_only:
      print("\n".join(commands(sweep, point, workdir)))
      continue
    if not summarize_only and summary_row(point["name"], workdir, names) is None:
      print(f"sweep: {point['name']} -> {workdir}", flush=True)
      run_point(sweep, point, workdir)
    row = summary_row(point["name"], workdir, names)
    if row is None:
      print(f"sweep: {point['name']} has not finished; left out of the summary", flush=True)
    else:
      rows.append(row)
  if rows:
    write_summary(rows, directory)
    print(f"sweep: {len(rows)} of {len(sweep.points)} points in {directory}/summary.csv and "
          "summary.png")
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  sweep_main(f.sweep, f.workdir, f.print_only, f.summarize_only, cli.config_spec(), cli.overrides(),
             f.plan)


if __name__ == "__main__":
  # Flags only when run as a script: tests import this file next to other CLIs' flags.
  cli.define_config_flag()
  flags.DEFINE_string("sweep", None, "sweep file[:arg]")
  flags.DEFINE_string("workdir", None, "one subdirectory per point, summary.csv and summary.png")
  flags.DEFINE_bool("print_only", False, "print each point's commands instead of running them")
  flags.DEFINE_bool("summarize_only", False, "only aggregate points that already finished")
  flags.DEFINE_string("plan", None, "print each point's planned time and cost on this target "
                      "(v5p-128, h100:8x8, ...) instead of running anything")
  flags.mark_flags_as_required(["sweep", "workdir"])
  app.run(main)
