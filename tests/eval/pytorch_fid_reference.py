"""What pytorch-fid itself computes, for tests/eval/test_fid.py to compare against; run with the
python of .venv-fid (.ci/fid_reference_env builds it: torch, torchvision, pytorch-fid).

  python pytorch_fid_reference.py OUT_DIR IMAGE_FOLDER

pytorch-fid's own FID InceptionV3, with random weights (seeded) instead of the download: random
BatchNorm scales and shifts, running statistics set from a batch of random images, noise and smooth
(so activations keep a sane scale through the 94 layers) and then moved a little, so eval-mode
BatchNorm matters. Writes to OUT_DIR:
  inception.pth      the network's state dict, under the names of pytorch-fid's weight file
  image_<i>.npy      uint8 HxWx3 inputs of several sizes; features.npy: their pool3 features [n, 2048]
  folder_stats.npz   pytorch-fid's statistics of IMAGE_FOLDER (mu, sigma), as --save-stats writes
  frechet.npz        random statistics and calculate_frechet_distance of each pair
"""

import sys
from unittest import mock

import numpy as np
import torch
from pytorch_fid import fid_score, inception

SIZES = ((64, 64), (37, 53), (299, 299))


def random_fid_inception():
  """(pytorch-fid's InceptionV3([3]), the torchvision Inception3 whose layers it holds)."""
  built = {}
  original = inception._inception_v3

  def keep(*args, **kwargs):
    built["net"] = original(*args, **kwargs)
    return built["net"]

  with mock.patch.object(inception, "_inception_v3", keep), \
       mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: built["net"].state_dict()):
    model = inception.InceptionV3([inception.InceptionV3.DEFAULT_BLOCK_INDEX])
  return model, built["net"]


def randomise_batch_norm(model, generator):
  """Random scale and shift; running statistics of a random batch, then moved a little."""
  norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  model.train()
  with torch.no_grad():
    for norm in norms:
      norm.weight.copy_(torch.empty(norm.num_features).uniform_(0.5, 1.5, generator=generator))
      norm.bias.copy_(0.1 * torch.randn(norm.num_features, generator=generator))
      norm.reset_running_stats()
      norm.momentum = None                          # running stats = this batch's statistics
    noise = torch.rand(2, 3, 299, 299, generator=generator)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 48, 48, generator=generator),
                                             size=(299, 299), mode="bilinear")
    model(torch.cat([noise, smooth]))
    for norm in norms:
      shape = norm.running_var.shape
      norm.running_var.mul_(torch.empty(shape).uniform_(0.8, 1.25, generator=generator))
      norm.running_mean.add_(0.1 * torch.randn(shape, generator=generator) * norm.running_var.sqrt())
  model.eval()


def frechet_cases(rng):
  """Well-conditioned statistics, and rank-deficient ones (fewer samples than dimensions)."""
  out = {}
  for name, samples, dim in (("full", 200, 24), ("rank_deficient", 10, 24)):
    for side in ("a", "b"):
      features = rng.normal(size=(samples, dim)) * rng.uniform(0.5, 2, dim) + rng.normal(size=dim)
      out[f"{name}_mu_{side}"] = features.mean(0)
      out[f"{name}_sigma_{side}"] = np.cov(features, rowvar=False)
    out[f"{name}_fid"] = fid_score.calculate_frechet_distance(
        out[f"{name}_mu_a"], out[f"{name}_sigma_a"], out[f"{name}_mu_b"], out[f"{name}_sigma_b"])
  return out


def main(out_dir, image_folder):
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  model, network = random_fid_inception()
  randomise_batch_norm(model, torch.Generator().manual_seed(1))
  torch.save(network.state_dict(), f"{out_dir}/inception.pth")
  features = []
  with torch.no_grad():
    for i, (height, width) in enumerate(SIZES):
      image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
      np.save(f"{out_dir}/image_{i}.npy", image)
      batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255   # what ToTensor does
      features.append(model(batch)[0][0, :, 0, 0].numpy())
    np.save(f"{out_dir}/features.npy", np.stack(features))
    mu, sigma = fid_score.compute_statistics_of_path(image_folder, model, batch_size=1, dims=2048,
                                                     device="cpu", num_workers=0)
  np.savez_compressed(f"{out_dir}/folder_stats.npz", mu=mu, sigma=sigma)
  np.savez(f"{out_dir}/frechet.npz", **frechet_cases(rng))


if __name__ == "__main__":
  main(*sys.argv[1:])
