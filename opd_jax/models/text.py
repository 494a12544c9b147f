"""Download-free language tokenizer: lower-cased words hashed into a fixed vocabulary.

Octo embeds instructions with a frozen T5; here any instruction a user types is turned into
word ids by a stable hash (CRC-32, identical across processes and machines, unlike Python's
salted `hash()`), and the policy learns an embedding per id. Distinct words may share an id
(about `n_words / vocab_size` of them collide), which the surrounding words disambiguate.
"""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

PAD_ID = 0
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
  """Lower-cased word pieces of `text` (runs of letters, digits and underscores)."""
  return _WORD.findall(text.lower())


def word_id(word: str, vocab_size: int = 4096) -> int:
  """Stable id in [1, vocab_size - 1] of one (already lower-cased) word; 0 is padding."""
  return zlib.crc32(word.encode("utf-8")) % (vocab_size - 1) + 1


def tokenize(texts: Sequence[str], max_len: int = 32,
             vocab_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Instructions -> padded word ids.

  Args:
    texts: N instructions (a list of str; a bare str is rejected to avoid tokenizing
      its characters as N texts).
    max_len: L, words kept per instruction (longer ones are truncated).
    vocab_size: ids lie in [1, vocab_size - 1]; 0 is padding.
  Returns:
    ids: int32 [N, L]; mask: bool [N, L], True on real words.
  """
  if isinstance(texts, (str, bytes)):
    raise TypeError("tokenize expects a sequence of instructions, got a single string; "
                    "wrap it in a list: tokenize([text])")
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1; got {max_len}")
  if vocab_size < 2:
    raise ValueError(f"vocab_size must be >= 2 (id 0 is padding); got {vocab_size}")
  texts = list(texts)
  ids = np.full((len(texts), max_len), PAD_ID, np.int32)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"instruction {i} is {type(text).__name__}, expected str")
    w = words(text)[:max_len]
    ids[i, :len(w)] = [word_id(x, vocab_size) for x in w]
  return ids, ids != PAD_ID
