"""Released image tokenizers -> workdirs -> ImageTokenizer: the whole path against the references.

Tiny random diffusers VQModel (MoVQ) and transformers Emu3VQVAE models are written with
save_pretrained (the MoVQ one sharded), imported with `convert.vq_import --hf_dir`, loaded with
`ImageTokenizer.load` and used on uint8 pixels exactly as prepare and sample use them.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
diffusers = pytest.importorskip("diffusers", reason="needs the hf extra: pip install -e '.[hf]'")
transformers = pytest.importorskip("transformers")

from helpers import ROOT  # noqa: E402
from synergen_jax.core.errors import CheckpointError, ConfigError  # noqa: E402
from synergen_jax.convert.vq_release import import_release  # noqa: E402
from synergen_jax.vq.tokenizer import ImageTokenizer  # noqa: E402

SIZE = 16
CLIP_MEAN, CLIP_STD = [0.481, 0.458, 0.408], [0.269, 0.261, 0.276]


def _perturb(model, seed=0):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=g))
  return model


@pytest.fixture(scope="module")
def movq(tmp_path_factory):
  """A MoVQ (norm_type spatial) saved in 3 safetensors shards with a weight map."""
  torch.set_num_threads(1)
  torch.manual_seed(0)
  model = _perturb(diffusers.VQModel(
      in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
      up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64),
      layers_per_block=1, norm_num_groups=16, num_vq_embeddings=64, latent_channels=8,
      sample_size=SIZE, norm_type="spatial").eval())
  path = tmp_path_factory.mktemp("movq_hf")
  model.save_pretrained(str(path), max_shard_size="100KB")
  return model, str(path)


@pytest.fixture(scope="module")
def movq_workdir(movq, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("movq_tok") / "tok")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  run = subprocess.run([sys.executable, "-m", "synergen_jax.convert.vq_import", "--hf_dir", movq[1],
                        "--workdir", out], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "vqgan from" in run.stdout
  return out


def _pixels(n, size, seed=1):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_sharded_movq_folder_imports_and_tokenizes_like_diffusers(movq, movq_workdir):
  model, path = movq
  assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) > 1   # really sharded
  tok = ImageTokenizer.load(movq_workdir, batch_size=8)
  assert (tok.family, tok.grid, tok.codebook_size) == ("vqgan", SIZE // 2, 64)
  pixels = _pixels(5, SIZE)
  x = torch.as_tensor(pixels.transpose(0, 3, 1, 2) / 127.5 - 1.0, dtype=torch.float32)
  with torch.no_grad():
    latents = model.encode(x).latents
    _, _, (_, _, idx) = model.quantize(latents)
    want = idx.reshape(5, SIZE // 2, SIZE // 2).numpy()
    recon = model.decode(latents).sample.numpy().transpose(0, 2, 3, 1)   # quantizes inside
  codes = tok.encode(pixels)
  assert np.mean(codes == want) >= 0.999
  want_u8 = np.clip(np.round((recon + 1.0) * 127.5), 0, 255)
  got_u8 = tok.decode(want).astype(np.float64)
  assert np.max(np.abs(got_u8 - want_u8)) <= 1        # float32 parity, then one rounding step


def test_emu3_release_with_its_pixel_normalisation(tmp_path):
  torch.manual_seed(0)
  config = transformers.Emu3VQVAEConfig(
      codebook_size=64, embed_dim=4, latent_channels=4, double_latent=False, in_channels=3,
      out_channels=3, temporal_downsample_factor=4, base_channels=32, channel_multiplier=[1, 2],
      num_res_blocks=1, attn_resolutions=[1], hidden_size=64, num_attention_heads=1)
  model = _perturb(transformers.Emu3VQVAE(config).eval())
  model.save_pretrained(str(tmp_path / "hf"))
  with open(tmp_path / "hf" / "preprocessor_config.json", "w") as f:
    json.dump(dict(image_mean=CLIP_MEAN, image_std=CLIP_STD, rescale_factor=1 / 255,
                   do_normalize=True, do_rescale=True), f)
  meta = import_release(str(tmp_path / "hf"), str(tmp_path / "tok"), image_size=SIZE)
  assert meta["family"] == "emu3" and meta["pixels"]["mean"] == CLIP_MEAN
  tok = ImageTokenizer.load(str(tmp_path / "tok"), batch_size=8)
  pixels = _pixels(3, SIZE, seed=2)
  x = (pixels / 255.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
  x = torch.as_tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32)
  with torch.no_grad():
    want = torch.stack(model.encode(x, image_sizes=[[SIZE, SIZE]] * 3).image_tokens).numpy()
    recon = model.decode(torch.as_tensor(want)).numpy().transpose(0, 2, 3, 1)
  assert np.mean(tok.encode(pixels) == want.reshape(3, SIZE // 2, SIZE // 2)) >= 0.999
  want_u8 = np.clip(np.round((recon * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)) * 255), 0, 255)
  assert np.max(np.abs(tok.decode(want.reshape(3, SIZE // 2, SIZE // 2)) - want_u8)) <= 1


def test_encoding_over_8_devices_equals_one_device(movq_workdir):
  assert jax.device_count() == 8
  pixels = _pixels(13, SIZE, seed=3)              # not a multiple of the batch: padding is dropped
  many = ImageTokenizer.load(movq_workdir, batch_size=8)
  one = ImageTokenizer.load(movq_workdir, batch_size=8, devices=jax.devices()[:1])
  codes = many.encode(pixels)
  np.testing.assert_array_equal(codes, one.encode(pixels))
  np.testing.assert_array_equal(many.decode(codes), one.decode(codes))


def test_refusals_name_the_problem_and_write_nothing(movq, tmp_path):
  _, path = movq
  with pytest.raises(CheckpointError, match="already holds a tokenizer"):
    os.makedirs(tmp_path / "used" / "checkpoints")
    import_release(path, str(tmp_path / "used"))
  with pytest.raises(ConfigError, match="--image_size=9 must be a positive multiple"):
    import_release(path, str(tmp_path / "a"), image_size=9)
  bad = tmp_path / "bad"
  bad.mkdir()
  for f in os.listdir(path):
    os.symlink(os.path.join(path, f), bad / f)
  cfg = json.load(open(os.path.join(path, "config.json")))
  os.remove(bad / "config.json")
  json.dump(dict(cfg, num_vq_embeddings=65), open(bad / "config.json", "w"))
  with pytest.raises(CheckpointError, match=r"misshaped tensors quantize.embedding.weight \(64, 8\)"):
    import_release(str(bad), str(tmp_path / "b"))
  os.remove(bad / "config.json")
  json.dump(dict(cfg, _class_name="AutoencoderKL"), open(bad / "config.json", "w"))
  with pytest.raises(CheckpointError, match="_class_name='AutoencoderKL'"):
    import_release(str(bad), str(tmp_path / "c"))
  assert not any(os.path.exists(tmp_path / d) for d in ("a", "b", "c"))
