"""The batch: the one contract between the data pipeline, the trainer, inference and the model.

A batch is a dict of arrays with T sequence slots per row and r = fh*fw codes per image window:

  text_tokens   [B, T]     int32   token id of text slots (ignored at image slots)
  image_codes   [B, T, r]  int32   the window's r codes at image slots, row-major (ignored at text slots)
  window_ids    [B, T]     int32   window index of an image slot within its image (raster order)
  modality      [B, T]     int32   TEXT (0; also <boi>/<eoi>/<pad>) or IMAGE (1); routes the FFN
  positions     [B, T]     int32   RoPE position, restarting at 0 per packed example
  text_targets  [B, T]     int32   next text token predicted at slot t
  text_weights  [B, T]     float32 loss weight of that prediction (0 = no loss)
  image_targets [B, T, r]  int32   codes of the window predicted at slot t (the next slot's window)
  image_weights [B, T]     float32 loss weight of that window (0 = no loss)
  segment_ids   [B, T]     int32   packed example id, 0 = padding

`data/layout.py` builds one example's slots (the sequence format and the target shift), the Grain
pipeline packs them into rows and adds `segment_ids`; the model reads nothing else.

Windows: an image's h x w code grid is cut into non-overlapping fh x fw windows, in raster order,
the r codes of a window row-major; `grid_to_windows` / `windows_to_grid` are the only place that
knows this order (the data layout, the fold embedding and the decoder use them).
"""

from __future__ import annotations

import einops
import numpy as np

TEXT, IMAGE = 0, 1          # modality ids

# Per-slot fields of one laid-out example; a packed row adds segment_ids.
SLOT_FIELDS = ("text_tokens", "image_codes", "window_ids", "modality", "positions", "text_targets",
               "text_weights", "image_targets", "image_weights")
FIELDS = SLOT_FIELDS + ("segment_ids",)
WINDOW_FIELDS = ("image_codes", "image_targets")     # [..., r]: one entry per code of the window
FLOAT_FIELDS = ("text_weights", "image_weights")


def dtype(field: str):
  return np.float32 if field in FLOAT_FIELDS else np.int32


def shape(field: str, rows: int, length: int, fold_ratio: int) -> tuple[int, ...]:
  return (rows, length, fold_ratio) if field in WINDOW_FIELDS else (rows, length)


def zeros(rows: int, length: int, fold_ratio: int, xp=np, fields=FIELDS) -> dict:
  """An all-padding batch of the given shape (parameter init, tracing, AOT compilation).

  xp: the array module (numpy, or jax.numpy to get device arrays).
  """
  return {k: xp.zeros(shape(k, rows, length, fold_ratio), dtype(k)) for k in fields}


def grid_to_windows(codes, fold):
  """[..., h, w] -> [..., (h/fh)*(w/fw), fh*fw]: windows in raster order, codes row-major inside."""
  fh, fw = fold
  return einops.rearrange(codes, "... (nh fh) (nw fw) -> ... (nh nw) (fh fw)", fh=fh, fw=fw)


def windows_to_grid(windows, code_grid, fold):
  """Inverse of grid_to_windows: [..., N, r] -> [..., h, w]."""
  fh, fw = fold
  return einops.rearrange(windows, "... (nh nw) (fh fw) -> ... (nh fh) (nw fw)",
                          nh=code_grid[0] // fh, fh=fh, fw=fw)
