"""The image tokenizer of a full export (convert/vq_export.py) in the format PyTorch loads: an Emu3
one as transformers' own Emu3VQVAE, a MoVQ one as diffusers' VQModel; through the export's loader
(hf_remote/image_tokenizer_synergen_vl.py) both encode to our codes and decode to our pixels within
one uint8 level. Small random tokenizers, imported as tests/convert/test_vq_release.py imports them.
(The project's own tokenizer: tests/convert/test_full_export.py.)"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
diffusers = pytest.importorskip("diffusers", reason="needs the hf extra: pip install -e '.[hf]'")
transformers = pytest.importorskip("transformers")

from helpers import remote_module  # noqa: E402
from synergen_jax.convert import vq_export  # noqa: E402
from synergen_jax.convert.vq_release import import_release  # noqa: E402
from synergen_jax.core import storage  # noqa: E402
from synergen_jax.vq.tokenizer import ImageTokenizer  # noqa: E402

from test_vq_release import _perturb  # noqa: E402  (the random-weight tokenizers' recipe)

SIZE = 16


def _loader():
  return remote_module("image_tokenizer_synergen_vl").load_image_tokenizer


def _round_trip(hf_dir, tmp_path):
  """Import the release, export its image tokenizer, load it back in PyTorch; (ours, theirs)."""
  import_release(hf_dir, str(tmp_path / "tok"), image_size=SIZE)
  ours = ImageTokenizer.load(str(tmp_path / "tok"), batch_size=8)
  meta = __import__("json").loads((storage.path(str(tmp_path / "tok")) / "vq_config.json").read_text())
  vq_export.write(ours, meta, storage.path(str(tmp_path / "export")))
  return ours, _loader()(str(tmp_path / "export" / vq_export.FOLDER))


def _check(ours, theirs, seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
  codes = ours.encode(pixels)
  np.testing.assert_array_equal(theirs.encode(pixels).numpy(), codes)
  diff = theirs.decode(codes).numpy().astype(int) - ours.decode(codes).astype(int)
  assert np.abs(diff).max() <= 1


def test_emu3_exports_as_transformers_emu3vqvae(tmp_path):
  torch.manual_seed(0)
  config = transformers.Emu3VQVAEConfig(
      codebook_size=64, embed_dim=4, latent_channels=4, double_latent=False, in_channels=3,
      out_channels=3, temporal_downsample_factor=4, base_channels=32, channel_multiplier=[1, 2],
      num_res_blocks=1, attn_resolutions=[1], hidden_size=64, num_attention_heads=1)
  _perturb(transformers.Emu3VQVAE(config).eval()).save_pretrained(str(tmp_path / "hf"))
  ours, theirs = _round_trip(str(tmp_path / "hf"), tmp_path)
  assert isinstance(theirs.model, transformers.Emu3VQVAE)
  _check(ours, theirs, seed=1)


def test_movq_exports_as_diffusers_vqmodel(tmp_path):
  torch.manual_seed(0)
  model = _perturb(diffusers.VQModel(
      in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
      up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64),
      layers_per_block=1, norm_num_groups=16, num_vq_embeddings=64, latent_channels=8,
      sample_size=SIZE, norm_type="spatial").eval())
  model.save_pretrained(str(tmp_path / "hf"))
  ours, theirs = _round_trip(str(tmp_path / "hf"), tmp_path)
  assert isinstance(theirs.model, diffusers.VQModel)
  _check(ours, theirs, seed=2)
