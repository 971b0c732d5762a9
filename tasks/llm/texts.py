"""The texts the llm task reads: held-out prose for perplexity, disjoint prose to calibrate Wanda.

Both come from Python's own documentation (``pydoc_data.topics``), so the quick tier needs no network.
Topics are sorted by name; every ``held_out_every``-th one forms the evaluation text (a fixed split,
independent of the seed). The calibration text is made of the other topics, less every topic that
shares a paragraph with the evaluation text: pydoc repeats itself (``specialnames`` contains the whole
of ``customization`` and ``attribute-access``, ``compound`` contains ``for``), and a pruning method
calibrated on the text it is then scored on would be scored on its own calibration data.
"""

from __future__ import annotations

import random
import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_MIN_PARAGRAPH = 80  # shorter paragraphs ("Changed in version 3.8.") repeat everywhere and carry no text


def held_out_text(*, held_out_every: int = 5) -> str:
    """Every ``held_out_every``-th topic of ``pydoc_data.topics`` (sorted by name), joined."""
    topics = _topics()
    return "\n\n".join(topics[name] for name in sorted(topics)[::held_out_every])


def calibration_text(*, held_out_every: int = 5) -> str:
    """The topics outside the held-out split that share no paragraph with it, joined."""
    topics = _topics()
    held_names = set(sorted(topics)[::held_out_every])
    held = held_out_text(held_out_every=held_out_every)
    held_paragraphs = _paragraphs(held)
    kept = [name for name in sorted(topics) if name not in held_names
            and not any(p in held for p in _paragraphs(topics[name]))
            and not any(p in topics[name] for p in held_paragraphs)]
    return "\n\n".join(topics[name] for name in kept)


def calibration_windows(token_ids: list[int], *, sequences: int, length: int, seed: int) -> list[list[int]]:
    """``sequences`` windows of ``length`` tokens at offsets drawn with ``seed`` (Wanda samples its
    calibration sequences at random from the training text; so does this, from the calibration text)."""
    last = len(token_ids) - length
    if last < 0:
        raise ValueError(f"calibration text has {len(token_ids)} tokens, fewer than one window of {length}")
    rng = random.Random(seed)
    return [token_ids[start:start + length] for start in (rng.randint(0, last) for _ in range(sequences))]


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return {name: text.strip() for name, text in topics.items()}


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _PARAGRAPH.split(text) if len(p.strip()) >= _MIN_PARAGRAPH]
