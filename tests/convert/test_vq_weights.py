"""VQ tokenizer weights: the naming/layout map checked against a torch forward written from the map,
a round trip through a state dict the test writes, and clear errors for state dicts that do not fit."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
import torch.nn.functional as F  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from helpers import ROOT, tiny  # noqa: E402
from synergen_jax.convert import vq_weights  # noqa: E402
from synergen_jax.core.errors import CheckpointError  # noqa: E402
from synergen_jax.vq.tokenizer import ImageTokenizer  # noqa: E402
from synergen_jax.vq import autoencoder as vq  # noqa: E402

ARGS = dict(downsample=8, num_res_blocks=2)   # 3 stride-2 stages, 2 residual blocks each side


def vq_setup():
  config, _ = tiny()
  config.vq.update(**ARGS)
  vq_config = vq.VQConfig.from_config(config)
  params = vq.VQModel(vq_config).init(jax.random.key(3), jnp.zeros(
      (1, vq_config.image_size, vq_config.image_size, vq_config.channels)))
  # Non-trivial norms and biases so a swapped name or a missed transpose shows.
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(x.size), x.shape), params)
  return config, vq_config, params


# -- a torch forward that only knows the state dict's names -------------------------------------------

def t_conv(x, sd, name, stride=1):
  w = torch.tensor(sd[name + ".weight"])
  return F.conv2d(x, w, torch.tensor(sd[name + ".bias"]), stride=stride,
                  padding=(w.shape[-1] - stride) // 2)


def t_norm(x, sd, name):
  return F.group_norm(x, math.gcd(x.shape[1], 32), torch.tensor(sd[name + ".weight"]),
                      torch.tensor(sd[name + ".bias"]), eps=1e-6)


def t_block(x, sd, name):
  h = t_conv(F.silu(t_norm(x, sd, name + ".norm1")), sd, name + ".conv1")
  h = t_conv(F.silu(t_norm(h, sd, name + ".norm2")), sd, name + ".conv2")
  return (t_conv(x, sd, name + ".nin_shortcut") if name + ".nin_shortcut.weight" in sd else x) + h


def t_normalize(x, dim):
  return x * torch.rsqrt((x * x).sum(dim, keepdim=True) + 1e-6)


def t_encode(images, sd, stages, blocks):
  x = t_conv(images, sd, "encoder.conv_in")
  for i in range(stages):
    x = t_conv(F.silu(x), sd, f"encoder.down.{i}.downsample.conv", stride=2)
  for j in range(blocks):
    x = t_block(x, sd, f"encoder.mid.block_{j}")
  x = t_conv(F.silu(t_norm(x, sd, "encoder.norm_out")), sd, "encoder.conv_out")
  z = t_normalize(x, 1)
  book = t_normalize(torch.tensor(sd["quantize.embedding.weight"]), 1)
  return z, torch.einsum("bdhw,kd->bhwk", z, book).argmax(-1)


def t_decode(codes, sd, stages, blocks):
  book = t_normalize(torch.tensor(sd["quantize.embedding.weight"]), 1)
  x = t_conv(book[codes].permute(0, 3, 1, 2), sd, "decoder.conv_in")
  for j in range(blocks):
    x = t_block(x, sd, f"decoder.mid.block_{j}")
  for i in range(stages):
    x = t_conv(F.interpolate(F.silu(x), scale_factor=2, mode="nearest"), sd, f"decoder.up.{i}.upsample.conv")
  return t_conv(F.silu(t_norm(x, sd, "decoder.norm_out")), sd, "decoder.conv_out")


def test_state_dict_layout_matches_a_torch_forward(rng):
  _, c, params = vq_setup()
  sd = vq_weights.to_state_dict(params, c)
  model = vq.VQModel(c)
  images = rng.uniform(-1, 1, (3, c.image_size, c.image_size, c.channels)).astype(np.float32)
  z = model.apply(params, jnp.asarray(images), method=model.encode_continuous)
  codes = model.apply(params, jnp.asarray(images), method=model.encode)
  with torch.no_grad():
    tz, tcodes = t_encode(torch.from_numpy(images).permute(0, 3, 1, 2), sd, 3, 2)
    trecon = t_decode(torch.from_numpy(np.array(codes)), sd, 3, 2)
  np.testing.assert_allclose(np.asarray(z), tz.permute(0, 2, 3, 1).numpy(), atol=2e-5)
  np.testing.assert_array_equal(np.asarray(codes), tcodes.numpy())
  recon = model.apply(params, codes, method=model.decode)
  np.testing.assert_allclose(np.asarray(recon), trecon.permute(0, 2, 3, 1).numpy(), atol=2e-4)


def test_round_trip_through_files(tmp_path):
  _, c, params = vq_setup()
  sd = vq_weights.to_state_dict(params, c)
  save_file(sd, str(tmp_path / "vq.safetensors"))
  back = vq_weights.from_state_dict(vq_weights.read_state_dict(str(tmp_path / "vq.safetensors")), c, "f")
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))
  # A Lightning-style torch checkpoint with a prefix: pickle only when asked, then the same params.
  torch.save({"state_dict": {"vqmodel." + k: torch.from_numpy(v) for k, v in sd.items()}},
             tmp_path / "vq.ckpt")
  with pytest.raises(CheckpointError, match="--allow_pickle"):
    vq_weights.read_state_dict(str(tmp_path / "vq.ckpt"))
  state = vq_weights.read_state_dict(str(tmp_path / "vq.ckpt"), allow_pickle=True, prefix="vqmodel.")
  jax.tree.map(np.testing.assert_array_equal, vq_weights.from_state_dict(state, c, "f"),
               jax.tree.map(np.asarray, params))


def test_cli_writes_a_tokenizer_workdir(tmp_path, rng):
  config, c, params = vq_setup()
  sd = vq_weights.to_state_dict(params, c)
  save_file(sd, str(tmp_path / "vq.safetensors"))
  subprocess.run([sys.executable, "-m", "synergen_jax.convert.vq_import", "--weights",
                  str(tmp_path / "vq.safetensors"), "--workdir", str(tmp_path / "tok"), "--config",
                  str(ROOT / "configs/tiny.py"), "--config.vq.downsample=8", "--config.vq.num_res_blocks=2"],
                 check=True, cwd=ROOT, capture_output=True)
  tok = ImageTokenizer.load(str(tmp_path / "tok"))
  pixels = rng.integers(0, 256, (4, c.image_size, c.image_size, c.channels), dtype=np.uint8)
  with torch.no_grad():
    images = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    _, tcodes = t_encode(images, sd, 3, 2)
  np.testing.assert_array_equal(tok.encode(pixels), tcodes.numpy())


def test_state_dicts_that_do_not_fit_are_refused(tmp_path):
  _, c, params = vq_setup()
  sd = vq_weights.to_state_dict(params, c)
  with pytest.raises(CheckpointError, match=r"^x: .*1 unknown tensors \['quant_conv.weight'\]$"):
    vq_weights.from_state_dict({**sd, "quant_conv.weight": np.zeros((8, 8, 1, 1))}, c, "x")
  partial = {k: v for k, v in sd.items() if "block_1" not in k}
  with pytest.raises(CheckpointError, match=r"16 missing tensors \['decoder.mid.block_1.conv1.bias'"):
    vq_weights.from_state_dict(partial, c, "x")
  wider = vq.VQConfig(**{**c.__dict__, "width": 16})
  with pytest.raises(CheckpointError, match=r"54 misshaped tensors .*decoder.conv_in.weight "
                     r"\(32, 8, 3, 3\) \(config.vq implies \(64, 8, 3, 3\)\)"):
    vq_weights.from_state_dict(sd, wider, "x")
