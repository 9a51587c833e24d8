"""Emu3's image tokenizer against transformers' Emu3VQVAE: codes, pixels, both weight layouts."""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synergen_jax.core.errors import CheckpointError, ConfigError
from synergen_jax.vq import emu3

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

# The release's shape in miniature: attention in the last level and the mid block, 4-dim codes,
# 4x temporal downsampling; 3 levels (downsample 4) so 32x32 images give 8x8 code grids.
HF_CONFIG = dict(codebook_size=128, embed_dim=4, latent_channels=4, base_channels=32,
                 channel_multiplier=[1, 2, 2], num_res_blocks=2, attn_resolutions=[2],
                 hidden_size=64, num_attention_heads=2, temporal_downsample_factor=4)
N, SIZE = 2, 32


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """A perturbed tiny Emu3VQVAE, its save_pretrained files read back, and its codes and pixels."""
  torch.set_num_threads(1)
  torch.manual_seed(0)
  model = transformers.Emu3VQVAE(transformers.Emu3VQVAEConfig(**HF_CONFIG)).eval()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    # Noise on every weight (unit GroupNorm/BatchNorm scales, zero biases included) and non-trivial
    # running statistics, so no identity-initialised piece can hide a wrong port.
    for p in model.parameters():
      scale = p.std() if p.numel() > 1 and p.std() > 0 else 1.0
      p.add_(0.2 * scale * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.5 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
    images = torch.rand((N, 3, SIZE, SIZE), generator=g) * 2 - 1
    # Codebook rows near the encoder's outputs (plus noise), so the codes vary across positions.
    frames = images[:, None].repeat(1, HF_CONFIG["temporal_downsample_factor"], 1, 1, 1)
    z = model.quant_conv(model.encoder(frames).permute(0, 2, 1, 3, 4))
    flat = z.permute(0, 2, 3, 4, 1).reshape(-1, HF_CONFIG["embed_dim"])
    k = HF_CONFIG["codebook_size"]
    rows = flat[torch.randint(0, flat.shape[0], (k,), generator=g)]
    model.quantize.embedding.weight.copy_(
        rows + 0.3 * flat.std() * torch.randn(rows.shape, generator=g))
    codes = torch.stack(model.encode(images, image_sizes=[[SIZE, SIZE]] * N).image_tokens)
    pixels = model.decode(codes)
  out = tmp_path_factory.mktemp("emu3_hf")
  model.save_pretrained(out)
  with open(out / "config.json") as f:
    hf_config = json.load(f)
  cfg = emu3.Emu3Config.from_hf(hf_config, str(out / "config.json"))
  state = safetensors_numpy.load_file(str(out / "model.safetensors"))
  return dict(cfg=cfg, hf_config=hf_config, state=state,
              variables=emu3.params_from_state_dict(state, cfg, str(out / "model.safetensors")),
              images=images.numpy().transpose(0, 2, 3, 1), codes=codes.numpy(),
              pixels=pixels.numpy().transpose(0, 2, 3, 1))


def test_codes_and_pixels_match_transformers(reference):
  cfg, variables = reference["cfg"], reference["variables"]
  model = emu3.Emu3VQ(cfg)
  assert (cfg.downsample, cfg.codebook_size, cfg.code_dim, cfg.channels) == (4, 128, 4, 3)
  assert set(variables) == {"params", "batch_stats"}
  codes = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(
      variables, reference["images"])
  assert codes.dtype == jnp.int32 and codes.shape == (N, SIZE // 4, SIZE // 4)
  assert len(np.unique(reference["codes"])) >= 16          # a test that can tell codes apart
  assert np.mean(np.asarray(codes) == reference["codes"]) >= 0.999
  pixels = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))(
      variables, jnp.asarray(reference["codes"], jnp.int32))
  assert pixels.shape == (N, SIZE, SIZE, 3)
  assert np.std(reference["pixels"]) > 0.1                  # 1e-4 is small against the signal
  np.testing.assert_allclose(np.asarray(pixels), reference["pixels"], rtol=0, atol=1e-4)


def _original_name(name: str) -> str:
  """transformers' name -> the release's (Emu3VisionVQModel): convert_emu3_weights_to_hf undone."""
  for pattern, repl in ((r"\.down_block\.down\.", ".down."), (r"\.up_block\.up\.", ".up."),
                        (r"\.middle_block\.", ".mid."), (r"mid\.attn_norm\.", "mid.attn_1.norm."),
                        (r"attn_norms\.(\d+)\.", r"attn.\1.norm."), (r"\.q_proj\.", ".q."),
                        (r"\.k_proj\.", ".k."), (r"\.v_proj\.", ".v."),
                        (r"\.out_proj\.", ".proj_out.")):
    name = re.sub(pattern, repl, name)
  return name


def test_original_release_names_load_to_the_same_parameters(reference):
  state = {}
  for name, x in reference["state"].items():
    name = _original_name(name)
    if re.search(r"\.(q|k|v|proj_out)\.weight$", name):
      x = x[:, :, None, None]                  # the release's attention projections: 1x1 convs
    state[name] = x
  assert "encoder.mid.attn_1.norm.weight" in state
  assert "decoder.up.2.attn.1.norm.conv_y.bias" in state
  variables = emu3.params_from_state_dict(state, reference["cfg"], "release.safetensors")
  jax.tree.map(np.testing.assert_array_equal, variables, reference["variables"])


def test_refuses_unknown_missing_and_misshaped_tensors(reference):
  state = dict(reference["state"])
  state["encoder.extra.weight"] = np.zeros(3, np.float32)
  del state["decoder.conv_out.bias"]
  state["encoder.conv_in.weight"] = np.zeros((32, 3, 5, 5), np.float32)
  with pytest.raises(CheckpointError) as e:
    emu3.params_from_state_dict(state, reference["cfg"], "w.safetensors")
  message = str(e.value)
  for part in ("w.safetensors", "1 unknown tensors ['encoder.extra.weight']",
               "1 missing tensors ['decoder.conv_out.bias']",
               "encoder.conv_in.weight (32, 3, 5, 5) (config implies (32, 3, 3, 3))"):
    assert part in message


def test_config_reads_both_spellings(reference):
  hf = reference["hf_config"]
  assert reference["cfg"] == emu3.Emu3Config.from_hf({"vq_config": hf}, "full/config.json")
  release = dict(model_type="Emu3VisionVQ", ch=32, ch_mult=[1, 2, 2], z_channels=4, double_z=False,
                 embed_dim=4, codebook_size=128, num_res_blocks=2, attn_resolutions=[2],
                 temporal_downsample_factor=4, in_channels=3, out_channels=3, dropout=0.0)
  assert emu3.Emu3Config.from_hf(release, "release/config.json") == dataclasses.replace(
      reference["cfg"], num_attention_heads=1)


@pytest.mark.parametrize("key, value", [("double_latent", True), ("temporal_downsample_factor", 3),
                                        ("hidden_size", 32), ("base_channels", 48),
                                        ("latent_channels", 8), ("model_type", "chameleon_vqgan"),
                                        ("norm_type", "spatial")])
def test_refuses_unsupported_config_values(reference, key, value):
  with pytest.raises(ConfigError, match=re.escape(f"vq/config.json: {key}={value!r}")):
    emu3.Emu3Config.from_hf({**reference["hf_config"], key: value}, "vq/config.json")
