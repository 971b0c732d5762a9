"""The texts the llm task reads: held-out prose for perplexity, license texts for memorization.

Both come with Python and its installed packages, so the quick tier needs no network:

* ``pydoc_data.topics``: Python's own documentation. Topics are sorted by name and every
  ``held_out_every``-th one forms the evaluation text (a fixed split, independent of the seed).
* License texts shipped in site-packages (``*.dist-info`` license files): Apache-2.0, MIT, BSD and
  GPL-family texts are among the most duplicated documents on the web, so a pretrained model has
  seen them many times. For each family the body shared by the most installed packages is used
  (copyright lines, which differ per package, are cut off), so the probe set depends on what is
  installed only when two variants tie.
* Controls: the same texts with their sentences shuffled under a fixed seed: the same words and
  style, an order no model can have memorized.
"""

from __future__ import annotations

import collections
import importlib.metadata
import random
import re

# Where each family's body begins; the text before it (title, copyright) is package-specific.
LICENSE_FAMILIES = {
    "apache-2.0": re.compile(r"TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"),
    "mit": re.compile(r"Permission is hereby granted, free of charge"),
    "bsd": re.compile(r"Redistribution and use in source and binary forms"),
    "gpl": re.compile(r"GNU (?:LESSER |LIBRARY |AFFERO )?GENERAL PUBLIC LICENSE\s+Version"),
}
_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+(?=\S)")
_MIN_CHARS = 600  # shorter bodies leave no room for a prefix plus 50 tokens of continuation


def held_out_text(*, held_out_every: int = 5) -> str:
    """Every ``held_out_every``-th topic of ``pydoc_data.topics`` (sorted by name), joined."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    return "\n\n".join(topics[name].strip() for name in names[::held_out_every])


def license_texts() -> dict[str, str]:
    """``{family: body}`` for each family found in installed packages' license files."""
    bodies: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    raw: dict[str, str] = {}  # normalized body -> its first copy as written (line breaks kept)
    for text in _installed_license_files():
        for family, start in LICENSE_FAMILIES.items():
            match = start.search(text)
            if match:
                body = _normalize(text[match.start():])
                if len(body) >= _MIN_CHARS:
                    bodies[family][body] += 1
                    raw.setdefault(body, text[match.start():].strip())
                break
    # The most shared body per family; ties go to the lexicographically smallest, so the choice is stable.
    # The copy as written is returned: the model saw these texts with their line breaks.
    return {family: raw[min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]] for family, c in sorted(bodies.items())}


def shuffle_sentences(text: str, *, seed: int) -> str:
    """The text's sentences in a random order (fixed by ``seed``): the control for memorization."""
    sentences = _SENTENCE_END.split(text.strip())
    rng = random.Random(seed)
    for _ in range(10):  # a short text could come back in its own order; reshuffle
        rng.shuffle(sentences)
        shuffled = " ".join(sentences)
        if shuffled != text or len(sentences) < 2:
            return shuffled
    return shuffled


def _normalize(text: str) -> str:
    """Line breaks and indentation vary between copies of one license; the words do not (for counting copies)."""
    return re.sub(r"\s+", " ", text).strip()


def _installed_license_files() -> list[str]:
    texts = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        for file in dist.files or ():
            name = file.name.upper()
            if ".dist-info" in str(file) and (name.startswith(("LICENSE", "LICENCE", "COPYING"))):
                try:
                    texts.append(file.read_text())
                except (OSError, UnicodeDecodeError):
                    continue
    return texts
