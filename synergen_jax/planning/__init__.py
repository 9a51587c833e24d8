"""The fit and cost planner: which slice and layout trains a stage, and what it costs, before paying.

  targets.py       named slices and GPU clusters: chips, memory, peak FLOP/s, links, their AOT name
  layouts.py       a layout (mesh, remat, accumulation, attention, unfold chunk) and the candidates
  facts.py         a config's figures the planner needs (budgets resolved, parameters per stage)
  memory.py        bytes per chip: exact terms plus modelled temporaries, calibrated on AOT compiles
  roofline.py      step time from FLOPs, HBM traffic and collectives, with a calibrated ceiling
  prices.py        dated price table per chip-hour, overridable by a file
  prepare_cost.py  the image tokenizer's FLOPs per image, images/s per chip, hours for a stage
  calibrate.py     fits memory's calibration to AOT compiles; reads a device check's measurement
  planner.py       candidates ranked per target with time and cost; `summarize` for sweeps
"""
