"""The training text, its tokenizer, and the training set with the canaries planted in it.

Text: Python's own documentation (``pydoc_data.topics``), topics sorted by name; every
``held_out_every``-th topic is held out for perplexity (the split the llm family uses), the rest
is training text. No network.

Tokenizer (model ``scratch``): byte-level BPE trained on the training text with Hugging Face's
``tokenizers``, with digits split into single-digit tokens before BPE, so that every d-digit
secret is exactly d tokens and the secret space maps one to one onto token sequences. A
pretrained model (``hf_dir``) brings its own tokenizer; secrets then take whatever tokens it
gives them, and :func:`encode_after` checks that the template's tokens stay the same in front.

Training examples are rows of ``seq_len`` tokens: evenly spaced windows of the training text,
then one row per copy of each planted secret: the canary sentence, a newline, and a window of
training text drawn from the seed as filler (each copy its own filler).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.memorization.canaries import CanaryPlan, secret_text

_FILLER_STREAM = 3


def split_topics(*, held_out_every: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts) of ``pydoc_data.topics``, sorted by topic name."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    held = [topics[n].strip() for i, n in enumerate(names) if i % held_out_every == 0]
    train = [topics[n].strip() for i, n in enumerate(names) if i % held_out_every != 0]
    return train, held


def train_tokenizer(texts: Sequence[str], *, vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (``PreTrainedTokenizerFast``) with single-digit number tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return tokenizer_from_json(tok.to_str())


def tokenizer_from_json(text: str) -> Any:
    """The tokenizer :func:`train_tokenizer` made, back from its JSON (as the model cache stores it)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text), eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def bos_ids(tokenizer: Any) -> list[int]:
    """The beginning-of-sequence token a pretrained model expects in front of every row; none for ours."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return [bos] if bos is not None else []


def encode_after(tokenizer: Any, prefix: str, texts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """(ids of ``prefix``, ids of what follows it in each ``prefix + text``).

    Raises when a text changes how the prefix itself is tokenized (a merge across the boundary),
    since the prefix's ids are then not a prefix of the whole's.
    """
    head = encode(tokenizer, [prefix])[0]
    tails = []
    for text, ids in zip(texts, encode(tokenizer, [prefix + t for t in texts])):
        if ids[:len(head)] != head:
            raise ValueError(f"the tokenizer merges {prefix!r} with what follows it in {text!r}, so its tokens "
                             "are not a prefix of the whole's; end the template with a separator the tokenizer "
                             "keeps apart, or give extraction_prompt_digits that end on a token boundary")
        tails.append(ids[len(head):])
    return head, tails


def corpus_windows(ids: Sequence[int], *, seq_len: int, count: int | None) -> np.ndarray:
    """``count`` non-overlapping windows of ``seq_len`` tokens, evenly spaced over the text (all when None)."""
    n = len(ids) // seq_len
    if n < 1:
        raise ValueError(f"the training text has {len(ids)} tokens, fewer than one window of {seq_len}")
    picked = np.arange(n) if count is None or count >= n else np.linspace(0, n - 1, count).round().astype(int)
    array = np.asarray(ids[:n * seq_len], dtype=np.int64).reshape(n, seq_len)
    return array[picked]


def canary_rows(plan: CanaryPlan, *, template: str, tokenizer: Any, text_ids: Sequence[int], seq_len: int,
                seed: int) -> np.ndarray:
    """One row per copy of each planted secret: [bos] canary, newline, filler text from ``text_ids``."""
    copies = plan.training_copies()
    _, tails = encode_after(tokenizer, template, [secret_text(s) + "\n" for s, _ in copies])
    head = bos_ids(tokenizer) + encode(tokenizer, [template])[0]
    rng = np.random.default_rng([seed, _FILLER_STREAM])
    rows = []
    for (_, count), tail in zip(copies, tails):
        canary = head + tail
        if len(canary) >= seq_len:
            raise ValueError(f"a canary takes {len(canary)} tokens; seq_len ({seq_len}) must be longer")
        for start in rng.integers(0, len(text_ids) - seq_len, size=count):
            rows.append((canary + list(text_ids[start:start + seq_len]))[:seq_len])
    return np.asarray(rows, dtype=np.int64).reshape(-1, seq_len)


def training_rows(*, plan: CanaryPlan, template: str, tokenizer: Any, texts: Sequence[str], seq_len: int,
                  corpus_count: int | None, seed: int) -> np.ndarray:
    """The training set: text windows (``[bos]`` in front for a pretrained model) and the canary rows."""
    ids = encode(tokenizer, ["\n\n".join(texts)])[0]
    bos = bos_ids(tokenizer)
    windows = corpus_windows(ids, seq_len=seq_len - len(bos), count=corpus_count)
    if bos:
        windows = np.concatenate([np.full((len(windows), len(bos)), bos, dtype=np.int64), windows], axis=1)
    canaries = canary_rows(plan, template=template, tokenizer=tokenizer, text_ids=ids, seq_len=seq_len, seed=seed)
    return np.concatenate([windows, canaries])
