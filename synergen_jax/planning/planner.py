"""The plan: every candidate layout of a config on each target with its memory per chip, step
time, throughput, MFU, hours and cost, ranked; and `summarize`, one target's answer as a dict
(what launch/sweep.py prints per sweep point and the launch scripts check).

A layout fits when the predicted bytes per chip stay under (1 - margin) of HBM, the margin being
the memory model's error against AOT compiles for its remat policy (memory.ERROR_BOUND): a
prediction within that margin of the limit is no answer (`--verify` compiles the winner to settle
it).
"""

from __future__ import annotations

import dataclasses
import math

from synergen_jax.core.errors import ConfigError
from synergen_jax.kernels.attention import auto_impl
from synergen_jax.planning import layouts
from synergen_jax.planning.facts import Facts, facts
from synergen_jax.planning.memory import error_bound, memory
from synergen_jax.planning.prepare_cost import prepare_cost
from synergen_jax.planning.prices import PRICES
from synergen_jax.planning.roofline import EFFICIENCY, _segments, step_time
from synergen_jax.planning.targets import Target, parse_target


@dataclasses.dataclass
class Row:
  target: str
  layout: str
  mesh: str
  fits: bool
  configured: bool                 # the layout the config itself asks for
  predicted_bytes_per_chip: int
  hbm_bytes_per_chip: int
  fit_limit_bytes_per_chip: int    # HBM less the memory model's error bound for this layout
  dominant_term: str
  step_seconds: float
  bound: str
  tokens_per_second_per_chip: float
  mfu: float
  steps: int
  hours: float
  cost: float
  aot_bytes_per_chip: int | None = None
  _layout: layouts.Layout | None = dataclasses.field(default=None, repr=False)

  def as_dict(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}


def steps_for(f: Facts, *, examples: int | None = None, tokens: int | None = None,
              steps: int | None = None) -> int:
  """Optimizer steps for a stage: given, or from a token or example count (examples pack
  seq_len / example-length to a row), or the config's train.steps."""
  if sum(x is not None for x in (examples, tokens, steps)) > 1:
    raise ConfigError("give at most one of --examples, --tokens, --steps")
  per_step_tokens = f.batch_size * f.seq_len
  if steps is not None:
    return steps
  if tokens is not None:
    return math.ceil(tokens / per_step_tokens)
  if examples is not None:
    return math.ceil(examples / (f.batch_size * len(_segments(f))))
  return f.steps


def attention_for(config, target: Target) -> str:
  impl = config.model.attention_impl
  return auto_impl(target.platform) if impl == "auto" else impl


def plan_target(config, f: Facts, target: Target, steps: int, prices: dict,
                efficiency: dict | None = None, configured_only: bool = False) -> list[Row]:
  """Every candidate of `target`, ranked: fitting rows first, then by hours (cost follows: one
  target, one price), the configured layout before an equal one."""
  configured = layouts.configured_layout(config, target, attention_for(config, target))
  options = [configured] if configured_only else layouts.candidates(target, f.batch_size, configured)
  price = prices.get(target.family)
  rows = []
  for layout in options:
    if f.batch_size % (layout.replicas * layout.grad_accum):
      continue
    mem = memory(f, layout, target.platform, target.hbm_bytes)
    limit = int((1 - error_bound(layout)) * target.hbm_bytes)
    st = step_time(f, layout, target, efficiency)
    hours = steps * st.seconds / 3600
    rows.append(Row(
        target=target.name, layout=layout.describe(), mesh=layout.mesh_text(),
        fits=mem.total <= limit, configured=layout == configured,
        predicted_bytes_per_chip=mem.total, hbm_bytes_per_chip=target.hbm_bytes,
        fit_limit_bytes_per_chip=limit,
        dominant_term=mem.dominant()[0], step_seconds=st.seconds, bound=st.bound(),
        tokens_per_second_per_chip=st.tokens_per_second_per_chip, mfu=st.mfu, steps=steps,
        hours=hours, cost=(hours * target.chips * price) if price is not None else float("nan"),
        _layout=layout))
  if not rows:
    raise ConfigError(f"config.train.batch_size={f.batch_size} splits over no mesh of {target.name} "
                      f"({target.chips} chips); use a multiple of {target.chips}")
  rows.sort(key=lambda r: (not r.fits, r.hours, not r.configured))
  return rows


def no_fit_message(rows: list[Row]) -> str:
  best = min(rows, key=lambda r: r.predicted_bytes_per_chip)
  return (f"fits nowhere: the smallest layout ({best.target}, {best.layout}) needs "
          f"{best.predicted_bytes_per_chip / 2**30:.1f} GiB per chip of {best.hbm_bytes_per_chip / 2**30:.0f}"
          f" GiB (fit limit {best.fit_limit_bytes_per_chip / 2**30:.1f}); its largest "
          f"term is {best.dominant_term}")


def summarize(config, target: str, *, examples: int | None = None, tokens: int | None = None,
              steps: int | None = None, prices: dict | None = None,
              efficiency: dict | None = None) -> dict:
  """One target's answer for one config (a sweep point): the cheapest fitting layout and the
  config's own, each as {layout, fits, predicted_gib_per_chip, step_seconds, hours, cost, mfu},
  and the prepare (tokenizer) cost of the stage's images."""
  t = parse_target(target)
  f = facts(config)
  n = steps_for(f, examples=examples, tokens=tokens, steps=steps)
  rows = plan_target(config, f, t, n, prices or PRICES, efficiency)
  brief = lambda r: dict(layout=r.layout, mesh=r.mesh, fits=r.fits,
                         predicted_gib_per_chip=round(r.predicted_bytes_per_chip / 2**30, 2),
                         step_seconds=r.step_seconds, hours=r.hours, cost=r.cost, mfu=r.mfu)
  configured = next(r for r in rows if r.configured)
  images = f.batch_size * len(_segments(f)) * n
  prep = prepare_cost(config, t, images, (efficiency or EFFICIENCY).get(t.family, 0.5))
  return dict(target=target, steps=n, best=brief(rows[0]) if rows[0].fits else None,
              configured=brief(configured), prepare_hours=prep.hours,
              prepare_tflops_per_image=prep.flops_per_image / 1e12)
