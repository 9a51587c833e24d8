"""diffusers' VQModel in Flax (vq/vqgan.py) against diffusers itself, from save_pretrained files.

Two tiny random models, one taming VQGAN (norm_type "group", vq_embed_dim != latent_channels) and
one MoVQ (norm_type "spatial", three levels, two layers per block), both with attention in the
down path, the up path and the mid block. Every parameter is perturbed before saving: diffusers
initialises norms to identity, which would hide a wrong GroupNorm grouping or scale/bias mix-up.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
diffusers = pytest.importorskip("diffusers", reason="needs diffusers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from synergen_jax.core.errors import CheckpointError, ConfigError  # noqa: E402
from synergen_jax.vq import vqgan  # noqa: E402

MODELS = {
    "group": dict(down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
                  up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
                  block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                  num_vq_embeddings=64, latent_channels=4, vq_embed_dim=6, sample_size=16,
                  norm_type="group"),
    "spatial": dict(down_block_types=("AttnDownEncoderBlock2D", "DownEncoderBlock2D",
                                      "AttnDownEncoderBlock2D"),
                    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D",
                                    "AttnUpDecoderBlock2D"),
                    block_out_channels=(32, 32, 64), layers_per_block=2, norm_num_groups=16,
                    num_vq_embeddings=256, latent_channels=8, sample_size=16, norm_type="spatial"),
}
BATCH = 2
PIXEL_ATOL = 1e-4


@pytest.fixture(scope="module", params=sorted(MODELS))
def saved(request, tmp_path_factory):
  """A random diffusers VQModel written by save_pretrained and read back as its files are."""
  torch.set_num_threads(1)
  torch.manual_seed(0)
  model = diffusers.VQModel(in_channels=3, out_channels=3, **MODELS[request.param]).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  path = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(str(path))
  with open(path / "config.json") as f:
    hf_config = json.load(f)
  state = safetensors_numpy.load_file(str(path / "diffusion_pytorch_model.safetensors"))
  return dict(name=request.param, torch_model=model, hf_config=hf_config, state=state,
              where=str(path))


def _nhwc(t):
  return t.permute(0, 2, 3, 1).numpy()


def _images(cfg, seed=1):
  g = torch.Generator().manual_seed(seed)
  return torch.rand(BATCH, cfg.channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1


def _diffusers_codes(model, x):
  with torch.no_grad():
    latents = model.encode(x).latents
    _, _, (_, _, indices) = model.quantize(latents)   # flattened over (n, h, w)
  return indices.reshape(latents.shape[0], latents.shape[2], latents.shape[3]).numpy()


def _diffusers_decode(model, codes, cfg):
  """diffusers' decode of code indices: codebook vectors, then decode without re-quantizing."""
  n, h, w = codes.shape
  with torch.no_grad():
    quant = model.quantize.get_codebook_entry(torch.as_tensor(codes).reshape(-1),
                                              (n, h, w, cfg.code_dim))
    return _nhwc(model.decode(quant, force_not_quantize=True).sample)


def test_config_reads_the_architecture(saved):
  cfg = vqgan.VQGANConfig.from_hf(saved["hf_config"], saved["where"])
  spec = MODELS[saved["name"]]
  assert cfg.downsample == 2 ** (len(spec["block_out_channels"]) - 1)
  assert cfg.codebook_size == spec["num_vq_embeddings"]
  assert cfg.code_dim == spec.get("vq_embed_dim", spec["latent_channels"])
  assert (cfg.channels, cfg.image_size, cfg.norm_type) == (3, 16, spec["norm_type"])


def test_codes_and_pixels_match_diffusers(saved):
  model = saved["torch_model"]
  cfg = vqgan.VQGANConfig.from_hf(saved["hf_config"], saved["where"])
  params = vqgan.params_from_state_dict(saved["state"], cfg, saved["where"])
  ours = vqgan.VQGAN(cfg)
  x = _images(cfg)

  want_codes = _diffusers_codes(model, x)
  codes = np.asarray(jax.jit(lambda p, x: ours.apply(p, x, method="encode"))(params, _nhwc(x)))
  assert codes.dtype == np.int32 and codes.shape == want_codes.shape
  agreement = float(np.mean(codes == want_codes))
  assert agreement >= 0.999, agreement
  assert len(np.unique(want_codes)) >= 3          # a codebook collapsed onto one code tests nothing

  # Decode the same codes both ways: the encoder's codes and random ones over the whole codebook.
  rng = np.random.default_rng(0)
  random_codes = rng.integers(0, cfg.codebook_size, want_codes.shape).astype(np.int32)
  decode = jax.jit(lambda p, c: ours.apply(p, c, method="decode"))
  for c in (want_codes, random_codes):
    want = _diffusers_decode(model, c, cfg)
    got = np.asarray(decode(params, jnp.asarray(c, jnp.int32)))
    assert got.shape == want.shape == (BATCH, cfg.image_size, cfg.image_size, 3)
    err = float(np.max(np.abs(got - want)))
    print(f"{saved['name']}: code agreement {agreement}, max abs pixel error {err:.2e}, "
          f"pixel std {want.std():.2f}")
    assert err <= PIXEL_ATOL, err
    assert want.std() > 0.05                      # the outputs are not a near-constant

  # The full round trip: diffusers' forward (encode, quantize, decode) against `__call__`.
  with torch.no_grad():
    want = _nhwc(model(x).sample)
  got = np.asarray(jax.jit(ours.apply)(params, _nhwc(x)))
  print(f"{saved['name']}: round trip max abs pixel error {np.max(np.abs(got - want)):.2e}, "
        f"{len(np.unique(want_codes))} distinct codes")
  np.testing.assert_allclose(got, want, atol=PIXEL_ATOL, rtol=0)


def test_refuses_extra_missing_and_misshaped_tensors(saved):
  cfg = vqgan.VQGANConfig.from_hf(saved["hf_config"], saved["where"])
  where = saved["where"]
  extra = dict(saved["state"], **{"decoder.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(CheckpointError, match=r"1 unknown tensors \['decoder.extra.weight'\]") as e:
    vqgan.params_from_state_dict(extra, cfg, where)
  assert where in str(e.value)

  missing = dict(saved["state"])
  del missing["decoder.mid_block.attentions.0.to_k.bias"]
  with pytest.raises(CheckpointError, match=r"1 missing tensors "
                     r"\['decoder.mid_block.attentions.0.to_k.bias'\]") as e:
    vqgan.params_from_state_dict(missing, cfg, where)
  assert where in str(e.value)

  name = "quantize.embedding.weight"
  k, d = saved["state"][name].shape
  misshaped = dict(saved["state"], **{name: np.zeros((k + 1, d), np.float32)})
  with pytest.raises(CheckpointError, match=rf"1 misshaped tensors {name} \({k + 1}, {d}\) "
                     rf"\(config implies \({k}, {d}\)\)") as e:
    vqgan.params_from_state_dict(misshaped, cfg, where)
  assert where in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("act_fn", "gelu"),
    ("down_block_types", ["DownEncoderBlock2D", "CrossAttnDownBlock2D"]),
    ("up_block_types", ["UpDecoderBlock2D"]),                  # one level short
    ("norm_type", "ada_group"),
    ("_class_name", "AutoencoderKL"),
    ("remap", "used_codes.npy"),
    ("norm_num_groups", 24),                                   # does not divide 32
])
def test_refuses_unsupported_config_values(key, value):
  hf_config = dict(_class_name="VQModel", **MODELS["group"])
  hf_config[key] = value
  with pytest.raises(ConfigError) as e:
    vqgan.VQGANConfig.from_hf(hf_config, "some/config.json")
  message = str(e.value)
  assert "some/config.json" in message and key in message and repr(value) in message, message


def test_refuses_spatial_norm_widths_it_cannot_group():
  hf_config = dict(MODELS["spatial"], block_out_channels=(16, 32, 64), norm_num_groups=8)
  with pytest.raises(ConfigError, match=r"config.json: block_out_channels=\[16, 32, 64\].*32"):
    vqgan.VQGANConfig.from_hf(hf_config, "config.json")
