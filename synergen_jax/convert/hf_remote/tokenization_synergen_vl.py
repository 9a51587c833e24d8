"""The run's SentencePiece tokenizer for transformers, giving exactly the ids synergen_jax trained with
(synergen_jax/data/tokenizers.py, SentencePieceTokenizer).

Text is split on the named pieces (<s>, <boi>, <|im_start|>, ...: the added tokens of
tokenizer_config.json, longest first); each piece is its id, and each stretch between them is
stripped and encoded by SentencePiece (which marks word starts itself). transformers' LlamaTokenizer
keeps the spaces around added tokens and so gives other ids for "<|im_start|>user\\n" or "a <boi>".
`AutoTokenizer.from_pretrained(DIR, trust_remote_code=True)` loads this class for an export of a
SentencePiece run; `tokenizer(text)` prepends <s> (add_special_tokens=False: the bare ids).

An export of a tokenizer.json (BPE) run needs none of this: its rewritten tokenizer.json holds every
named piece as an added token, and PreTrainedTokenizerFast reads the same ids from it.
"""

from __future__ import annotations

import os
import shutil

import sentencepiece as spm
from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}


class SynerGenVLTokenizer(PreTrainedTokenizer):
  vocab_files_names = VOCAB_FILES_NAMES
  model_input_names = ["input_ids", "attention_mask"]

  def __init__(self, vocab_file, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
               unk_token="<unk>", **kwargs):
    self.vocab_file = vocab_file
    self.sp = spm.SentencePieceProcessor(model_file=vocab_file)
    kwargs.setdefault("special_tokens_pattern", "bos")
    super().__init__(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                     unk_token=unk_token, **kwargs)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def get_vocab(self) -> dict:
    vocab = {self.sp.id_to_piece(i): i for i in range(self.vocab_size)}
    vocab.update(self.added_tokens_encoder)
    return vocab

  def _tokenize(self, text, **kwargs):
    text = text.strip()
    return self.sp.encode(text, out_type=str) if text else []

  def _convert_token_to_id(self, token):
    return self.sp.piece_to_id(token)

  def _convert_id_to_token(self, index):
    return self.sp.id_to_piece(int(index))

  def convert_tokens_to_string(self, tokens):
    return self.sp.decode_pieces(list(tokens))

  def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
    out = [self.bos_token_id] + list(token_ids_0)
    return out + list(token_ids_1) if token_ids_1 is not None else out

  def save_vocabulary(self, save_directory, filename_prefix=None):
    out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "")
                       + VOCAB_FILES_NAMES["vocab_file"])
    if os.path.abspath(out) != os.path.abspath(self.vocab_file):
      shutil.copyfile(self.vocab_file, out)
    return (out,)
