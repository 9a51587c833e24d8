"""What every layer reads: the config declarations, the batch contract, hardware facts, errors.

  keys.py        every config key declared once: type, default, description (config --describe)
  config.py      `get_config(arg)` parsing, base_config, the typed model config, validate_config
  batch.py       the batch: fields, dtypes, shapes, modality ids, zero batch, window order
  hardware.py    peak bf16 FLOP/s, HBM per device, GPU target descriptions (one table)
  errors.py      ConfigError, DataError, BadRecord, CheckpointError
  state_dict.py  imported weights: tensor shape checks and flat-name -> nested-tree placement
  cli.py         --config file.py[:arg] with --config.a.b=v overrides, for every command line
  storage.py     any path, local or gs://: whole-or-nothing writes, reachability errors, emulators
"""
