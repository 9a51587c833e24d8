"""HF import/export: log-probs equal the HF model's, export reloads in transformers, errors are clear.

Each family gets a tiny random HF model written to disk (sharded safetensors). InternLM2 is not in
transformers (it ships remote code), so its checkpoint is a Llama model's weights repacked the way
InternLM2's attention unpacks them ('b q (h gs d) -> b q h gs d', q heads then k then v per kv head);
the Llama model is then the reference.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
transformers = pytest.importorskip("transformers", reason="needs the hf extra")
from safetensors.torch import save_file  # noqa: E402

from helpers import ROOT, tiny  # noqa: E402
from synergen_jax.core.errors import CheckpointError, ConfigError  # noqa: E402
from synergen_jax.convert.exporter import export_checkpoint  # noqa: E402
from synergen_jax.convert.importer import import_checkpoint  # noqa: E402
from synergen_jax.infer import loader  # noqa: E402
from synergen_jax.infer.scoring import next_token_logprobs  # noqa: E402

# The LLM of configs/tiny.py, so an import can also seed a tiny training run.
SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
             max_position_embeddings=128)
IDS = [1, 5, 9, 33, 2, 60, 7, 7, 12, 40, 63, 0, 18]


def random_hf_model(family: str, seed: int = 0, **overrides):
  torch.manual_seed(seed)
  kw = dict(SHAPE, **overrides)
  if family == "qwen2":
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
  else:
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
  with torch.no_grad():   # larger than the default init, and norms away from 1, so mistakes show
    for name, p in model.named_parameters():
      p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.2) + (1.0 if "norm" in name else 0.0))
  return model.eval()


def save_internlm2(llama, path: str, extra: dict | None = None) -> None:
  """The Llama model's weights in InternLM2's names and packed wqkv, with an InternLM2 config.json."""
  c = llama.config
  heads, kv, hd = c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
  group = heads // kv
  sd = {k: v.detach().clone() for k, v in llama.state_dict().items()}
  out = {"model.tok_embeddings.weight": sd["model.embed_tokens.weight"],
         "model.norm.weight": sd["model.norm.weight"], "output.weight": sd["lm_head.weight"]}
  for i in range(c.num_hidden_layers):
    p = f"model.layers.{i}."
    q = sd[p + "self_attn.q_proj.weight"].reshape(kv, group, hd, -1)
    k = sd[p + "self_attn.k_proj.weight"].reshape(kv, 1, hd, -1)
    v = sd[p + "self_attn.v_proj.weight"].reshape(kv, 1, hd, -1)
    wqkv = torch.cat([q, k, v], dim=1).reshape(kv * (group + 2) * hd, -1)
    # InternLM2's own unpacking must give q, k, v back (the layout under test).
    x = torch.randn(3, c.hidden_size)
    qkv = (x @ wqkv.T).reshape(3, kv, group + 2, hd)
    torch.testing.assert_close(qkv[:, :, :group].reshape(3, -1), x @ sd[p + "self_attn.q_proj.weight"].T)
    torch.testing.assert_close(qkv[:, :, -2].reshape(3, -1), x @ sd[p + "self_attn.k_proj.weight"].T)
    out.update({p + "attention.wqkv.weight": wqkv, p + "attention.wo.weight": sd[p + "self_attn.o_proj.weight"],
                p + "attention_norm.weight": sd[p + "input_layernorm.weight"],
                p + "ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
                p + "feed_forward.w1.weight": sd[p + "mlp.gate_proj.weight"],
                p + "feed_forward.w3.weight": sd[p + "mlp.up_proj.weight"],
                p + "feed_forward.w2.weight": sd[p + "mlp.down_proj.weight"]})
  os.makedirs(path, exist_ok=True)
  save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(path, "model.safetensors"))
  config = dict(model_type="internlm2", architectures=["InternLM2ForCausalLM"],
                auto_map={"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
                vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_hidden_layers=c.num_hidden_layers, num_attention_heads=heads,
                num_key_value_heads=kv, rms_norm_eps=c.rms_norm_eps, rope_theta=10000.0,
                rope_scaling=None, bias=False, hidden_act="silu", tie_word_embeddings=False,
                **(extra or {}))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(path, "modeling_internlm2.py"), "w") as f:
    f.write("# remote code stands in here; the import copies it along\n")


def hf_logprobs(model, ids) -> np.ndarray:
  with torch.no_grad():
    logp = torch.log_softmax(model(torch.tensor([ids])).logits.double(), -1)[0]
  return np.array([logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)])


def write_family(family: str, path: str, **overrides):
  """(reference torch model, HF folder) for a family."""
  if family == "internlm2":
    model = random_hf_model("llama", **overrides)
    save_internlm2(model, path)
  else:
    model = random_hf_model(family, **overrides)
    model.save_pretrained(path, max_shard_size="20KB")   # several shards + index
  return model


@pytest.mark.parametrize("family,scan", [("llama", False), ("qwen2", True), ("internlm2", True)])
def test_imported_scores_equal_the_hf_model(family, scan, tmp_path):
  config, _ = tiny("scan=true" if scan else "")
  model = write_family(family, str(tmp_path / "hf"), **({"tie_word_embeddings": True} if family == "qwen2" else {}))
  record = import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), config)
  assert record["family"] == family
  loaded = loader.load(str(tmp_path / "out"))
  assert loaded.mc.llm.qkv_bias == (family == "qwen2") and loaded.mc.tie_embeddings == (family == "qwen2")
  ours = np.array(next_token_logprobs(loaded.mc, loaded.params, IDS))
  np.testing.assert_allclose(ours, hf_logprobs(model, IDS), atol=1e-4)
  # Vision experts start as copies of the text FFNs.
  layers = loaded.params["params"]["decoder"]["layers" if scan else "layer_0"]
  np.testing.assert_array_equal(layers["ffn"]["vision_up"], layers["ffn"]["text_up"])
  if family == "internlm2":
    assert "modeling_internlm2.py" in record["copied_files"]


def test_score_cli_on_an_import(tmp_path):
  model = write_family("llama", str(tmp_path / "hf"))
  subprocess.run([sys.executable, "-m", "synergen_jax.convert.hf_import", "--hf_dir", str(tmp_path / "hf"),
                  "--workdir", str(tmp_path / "out"), "--config", str(ROOT / "configs/tiny.py")],
                 check=True, cwd=ROOT, capture_output=True)
  out = subprocess.run([sys.executable, "-m", "synergen_jax.score", "--workdir", str(tmp_path / "out"),
                        "--token_ids", ",".join(map(str, IDS))], check=True, cwd=ROOT,
                       capture_output=True, text=True)
  scores = json.loads(out.stdout.strip().splitlines()[-1])["logprobs"]
  np.testing.assert_allclose(scores, hf_logprobs(model, IDS), atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_export_of_an_import_reloads_in_transformers(family, tmp_path):
  model = write_family(family, str(tmp_path / "hf"))
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])
  export_checkpoint(str(tmp_path / "out"), str(tmp_path / "exported"), max_shard_bytes=30_000)
  assert os.path.exists(tmp_path / "exported" / "model.safetensors.index.json")
  again = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "exported")).eval()
  assert type(again) is type(model)
  with torch.no_grad():
    torch.testing.assert_close(again(torch.tensor([IDS])).logits, model(torch.tensor([IDS])).logits)


def test_internlm2_export_round_trips_the_packed_tensors(tmp_path):
  from safetensors.numpy import load_file
  write_family("internlm2", str(tmp_path / "hf"))
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny("scan=true")[0])
  export_checkpoint(str(tmp_path / "out"), str(tmp_path / "exported"))
  a, b = load_file(str(tmp_path / "hf/model.safetensors")), load_file(str(tmp_path / "exported/model.safetensors"))
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  config = json.load(open(tmp_path / "exported/config.json"))
  assert config["model_type"] == "internlm2" and config["auto_map"]
  assert os.path.exists(tmp_path / "exported/modeling_internlm2.py")


def test_export_of_a_trained_model_matches_its_scores(tiny_workdir, tmp_path):
  """A model trained here (vision experts, new-token rows) exports as a Llama whose log-probs are
  ours, including for <boi>/<eoi>/<UNCOND>, whose rows live in separate parameters."""
  loaded = loader.load(tiny_workdir)
  export_checkpoint(tiny_workdir, str(tmp_path / "exported"), dtype="float32")
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "exported")).eval()
  ids = [1, 7, 12, loaded.special.boi, 20, loaded.special.eoi, 9, loaded.special.uncond, 30, 2]
  ours = np.array(next_token_logprobs(loaded.mc, loaded.params, ids))
  np.testing.assert_allclose(ours, hf_logprobs(hf, ids), atol=1e-4)


def test_train_starts_from_an_import(tiny_data, tmp_path):
  """init_from an import: text weights arrive unchanged (stage 1 freezes them), the new-token rows
  the import lacks are initialised fresh, and a config that disagrees on RoPE theta is refused."""
  from synergen_jax.train.loop import train
  write_family("llama", str(tmp_path / "hf"))
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "imported"), tiny()[0])
  imported = loader.load(str(tmp_path / "imported")).params["params"]
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.update(steps=2, batch_size=8, log_every=1, checkpoint_every=2,
                      init_from=str(tmp_path / "imported"))
  result = train(config, str(tmp_path / "run"))
  trained = result["state"]["params"]["params"]
  np.testing.assert_array_equal(np.asarray(trained["text_embed"]["embedding"]),
                                imported["text_embed"]["embedding"])
  np.testing.assert_array_equal(np.asarray(trained["decoder"]["layer_1"]["attention"]["query_kernel"]),
                                imported["decoder"]["layer_1"]["attention"]["query_kernel"])
  assert "new_token_embed" in trained and "new_token_embed" not in imported
  assert not np.array_equal(np.asarray(trained["decoder"]["layer_0"]["ffn"]["vision_up"]),
                            imported["decoder"]["layer_0"]["ffn"]["vision_up"])   # stage 1 trains these
  config.model.rope_theta = 500_000.0
  with pytest.raises(ConfigError, match="rope_theta"):
    train(config, str(tmp_path / "run2"))


def test_extra_tokens_keep_the_pretrained_logits(tmp_path):
  import jax
  from synergen_jax.model.synergen_vl import SynerGenVL
  from synergen_jax.infer.scoring import _rows
  from synergen_jax.data.layout import Text, layout_example
  model = write_family("llama", str(tmp_path / "hf"))
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0], extra_tokens=5)
  loaded = loader.load(str(tmp_path / "out"))
  assert loaded.mc.text_vocab == 69
  table = np.asarray(loaded.params["params"]["text_embed"]["embedding"])
  np.testing.assert_allclose(table[64:], np.repeat(table[:64].mean(0, keepdims=True), 5, 0), rtol=1e-6)
  ex = layout_example([Text(IDS)], loaded.mc.fold, add_bos=False, add_eos=False)
  batch = jax.tree.map(np.asarray, _rows([ex], len(IDS), loaded.mc.fold))
  m = SynerGenVL(loaded.mc)
  logits = m.apply(loaded.params, m.apply(loaded.params, batch, method=SynerGenVL.hidden_states),
                   method=SynerGenVL.text_logits)
  with torch.no_grad():
    ref = model(torch.tensor([IDS])).logits[0].numpy()
  np.testing.assert_allclose(np.asarray(logits)[0, :, :64], ref, atol=1e-4)


def _stock_tokenizer(path) -> int:
  """A small SentencePiece tokenizer.model in `path` (no unused tokens); returns its size."""
  import io
  import sentencepiece as spm
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(["a one", "a two", "an image of three"] * 20),
                                 model_writer=out, vocab_size=30, model_type="bpe", minloglevel=2,
                                 hard_vocab_limit=False)
  (path / "tokenizer.model").write_bytes(out.getvalue())
  return spm.SentencePieceProcessor(model_proto=out.getvalue()).get_piece_size()


def test_a_sentencepiece_tokenizer_sizes_the_vocabulary(tmp_path):
  """With a tokenizer.model the import appends the rows it needs (no --extra_tokens arithmetic),
  refuses --extra_tokens, and refuses a tokenizer with more ids than the checkpoint has rows."""
  write_family("llama", str(tmp_path / "hf"))
  size = _stock_tokenizer(tmp_path / "hf")
  with pytest.raises(ConfigError, match="sizes the vocabulary itself"):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0], extra_tokens=4)
  config = tiny()[0]
  config.data.reserved_tokens = 64 - size    # with <pad> <boi> <eoi> <UNCOND> and the chat pieces: 70
  record = import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), config)
  assert record["text_vocab"] == 70 == record["text_tokenizer"]["vocab_size"] and record["extra_tokens"] == 6
  assert loader.load(str(tmp_path / "out")).mc.text_vocab == 70
  (tmp_path / "hf" / "added_tokens.json").write_text(json.dumps({f"<t{i}>": size + i for i in range(65 - size)}))
  with pytest.raises(CheckpointError, match="does not belong to these weights"):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out2"), tiny()[0])


def test_pickle_weights_need_allow_pickle(tmp_path):
  model = random_hf_model("llama")
  os.makedirs(tmp_path / "hf")
  model.config.save_pretrained(str(tmp_path / "hf"))
  torch.save(model.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
  with pytest.raises(CheckpointError, match="--allow_pickle"):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0], allow_pickle=True)
  loaded = loader.load(str(tmp_path / "out"))
  np.testing.assert_allclose(next_token_logprobs(loaded.mc, loaded.params, IDS), hf_logprobs(model, IDS),
                             atol=1e-4)


def _edit_config(path, **changes):
  c = json.load(open(path / "config.json"))
  c.update(changes)
  json.dump(c, open(path / "config.json", "w"))


@pytest.mark.parametrize("change,message", [
    (dict(num_hidden_layers=3), r"'model.layers.2.self_attn.q_proj.weight' is missing"),
    (dict(num_hidden_layers=1), r"not explained by its config.json"),
    (dict(intermediate_size=48), r"mlp.gate_proj.weight' has shape \(64, 32\).*implies \(48, 32\)"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), r"rope_type='linear'"),
    (dict(model_type="gpt2"), r"model_type='gpt2' is not a supported family"),
    (dict(hidden_act="gelu"), r"hidden_act='gelu'"),
])
def test_mismatched_checkpoints_fail_clearly(change, message, tmp_path):
  model = random_hf_model("llama")
  model.save_pretrained(str(tmp_path / "hf"))
  _edit_config(tmp_path / "hf", **change)
  with pytest.raises((CheckpointError, ConfigError), match=message):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])
  assert not os.path.exists(tmp_path / "out" / "checkpoints")


def test_corrupt_safetensors_names_the_file(tmp_path):
  model = random_hf_model("llama")
  model.save_pretrained(str(tmp_path / "hf"))
  path = tmp_path / "hf" / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])            # truncated download
  with pytest.raises(CheckpointError, match="model.safetensors"):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])
  path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header}")
  with pytest.raises(CheckpointError, match="model.safetensors"):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])


def test_import_refuses_a_used_workdir_and_export_a_full_out(tmp_path):
  write_family("llama", str(tmp_path / "hf"))
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])
  with pytest.raises(ConfigError, match="already holds checkpoints"):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), tiny()[0])
  os.makedirs(tmp_path / "full")
  (tmp_path / "full" / "x").write_text("")
  with pytest.raises(ConfigError, match="not empty"):
    export_checkpoint(str(tmp_path / "out"), str(tmp_path / "full"))
  with pytest.raises(ConfigError, match="q/k/v biases|family"):
    export_checkpoint(str(tmp_path / "out"), str(tmp_path / "e2"), family="gpt2")


def test_decoding_and_sample_cli_on_an_import(tiny_data, tmp_path):
  """Greedy KV-cached decoding of the imported weights equals transformers' greedy generate, and
  `sample` captions with an import whose folder brought a SentencePiece tokenizer.model."""
  import shutil
  from PIL import Image as PILImage
  from synergen_jax.data.layout import Text, layout_example
  from synergen_jax.infer import tasks
  model = write_family("llama", str(tmp_path / "hf"))
  shutil.copy(os.path.join(tiny_data["data_dir"], "tokenizer.model"), tmp_path / "hf" / "tokenizer.model")
  config = tiny()[0]
  config.vq.workdir = tiny_data["vq_dir"]
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "out"), config)
  loaded = loader.load(str(tmp_path / "out"))
  assert loaded.text_tokenizer is not None

  prompt = [1, 17, 30, 9, 44]
  ours = loaded.decoder.generate_text(
      [layout_example([Text(prompt)], loaded.mc.fold, loaded.special, add_bos=False, add_eos=False)],
      max_new_tokens=8, stop_tokens=())[0]
  with torch.no_grad():
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                            eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
  assert ours == theirs

  digit = np.zeros((28, 28, 3), np.uint8)
  digit[6:22, 12:16] = 255
  PILImage.fromarray(digit).save(tmp_path / "one.png")
  out = subprocess.run([sys.executable, "-m", "synergen_jax.sample", "--workdir", str(tmp_path / "out"),
                        "--image", str(tmp_path / "one.png"), "--max_new_tokens", "6"],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  want = tasks.caption(loaded, [tasks.image_codes(loaded, digit)], max_new_tokens=6)[0]
  assert out.stdout.strip().splitlines()[-1] == want
