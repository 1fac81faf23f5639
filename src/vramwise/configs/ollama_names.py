"""Ollama library names (``FROM llama3.1:8b``) to the catalog's models, and a quantization the tag names to a format.

An Ollama reference is ``[namespace/]name[:tag]``, the tag ``latest`` when omitted (ollama v0.12.10
``types/model/name.go``: ``DefaultTag``; the library namespace is ``library``). A library tag starts with the size
(``8b``, ``70b``, ``8x7b``) and may go on with the flavour and the quantization (``8b-instruct-q4_K_M``,
``8b-text-fp16``), as each model's tags page on ollama.com/library/NAME lists them. This table maps (name, size)
to the catalog model of that architecture, each from its library page; a tag without a size (``latest``) is not
guessed (the size it stands for is the registry's to say), nor is a quantization the tag does not name (``ollama
show NAME`` prints it). Only the library's own names: a user namespace (``me/model``) is not in it.
"""

from __future__ import annotations

import re

LIBRARY = "https://ollama.com/library/"

# (library name, size tag) -> catalog model of the same architecture (the library page's "Model" section names the
# upstream weights: e.g. llama3.1's are Meta's Llama 3.1 8B/70B/405B)
NAMES: dict[tuple[str, str], str] = {
    ("llama2", "7b"): "llama-2-7b",
    ("llama2", "70b"): "llama-2-70b",
    ("llama3", "8b"): "llama-3-8b",
    ("llama3", "70b"): "llama-3-70b",
    ("llama3.1", "8b"): "llama-3.1-8b",
    ("llama3.1", "70b"): "llama-3.1-70b",
    ("llama3.1", "405b"): "llama-3.1-405b",
    ("llama3.2", "1b"): "llama-3.2-1b",
    ("llama3.2", "3b"): "llama-3.2-3b",
    ("llama3.2-vision", "11b"): "llama-3.2-11b-vision",
    ("mixtral", "8x7b"): "mixtral-8x7b",
    ("mistral-nemo", "12b"): "mistral-nemo-12b",
    ("qwen2", "7b"): "qwen2-7b",
    ("qwen2.5", "0.5b"): "qwen2.5-0.5b",
    ("qwen2.5", "7b"): "qwen2.5-7b",
    ("qwen2.5", "72b"): "qwen2.5-72b",
    ("qwen3", "8b"): "qwen3-8b",
    ("qwen3", "30b"): "qwen3-30b-a3b",  # the library's qwen3:30b is the 30B-A3B mixture of experts
    ("gemma", "2b"): "gemma-2b",
    ("gemma", "7b"): "gemma-7b",
    ("gemma2", "2b"): "gemma-2-2b",
    ("gemma2", "9b"): "gemma-2-9b",
    ("gemma3", "1b"): "gemma-3-1b",
    ("gemma3", "4b"): "gemma-3-4b",
    ("phi3", "3.8b"): "phi-3-mini",
    ("phi3", "mini"): "phi-3-mini",
    ("falcon", "7b"): "falcon-7b",
    ("falcon", "40b"): "falcon-40b",
    ("gpt-oss", "20b"): "gpt-oss-20b",
    ("gpt-oss", "120b"): "gpt-oss-120b",
    ("deepseek-v3", "671b"): "deepseek-v3",
}

# a quantization named at the end of a tag (llama.cpp's ggml type names, as the tags spell them) -> vramwise's format
_QUANTS = {"q4_0": "q4_0", "q8_0": "q8_0", "q4_k_m": "q4_k_m", "q5_k_m": "q5_k_m", "q6_k": "q6_k", "fp16": "fp16",
           "bf16": "bf16"}
_REFERENCE = re.compile(r"(?:library/)?(?P<name>[a-z0-9][a-z0-9._-]*)(?::(?P<tag>[A-Za-z0-9._-]+))?")


def is_library_reference(text: str) -> bool:
    """Whether FROM's text reads as an Ollama library reference rather than a GGUF file or a folder."""
    return (
        not text.lower().endswith(".gguf")
        and not text.startswith((".", "/", "~"))
        and _REFERENCE.fullmatch(text) is not None
    )


def resolve(text: str) -> tuple[str | None, str | None, str]:
    """(catalog model or None, format the tag names or None, a note saying what was mapped or why not)."""
    m = _REFERENCE.fullmatch(text)
    if m is None:
        return None, None, f"FROM {text}: not an Ollama library reference"
    name, tag = m.group("name"), m.group("tag") or "latest"
    size, _, rest = tag.partition("-")
    model = NAMES.get((name, size.lower()))
    if model is None:
        why = (f"the tag {tag!r} names no size (give one, as in {name}:8b)" if (name, size.lower()) not in NAMES
               and any(n == name for n, _ in NAMES) else "no catalog model in vramwise's Ollama table "
               "(configs/ollama_names.py)")
        return None, None, f"FROM {text}: {why}: give MODEL (a catalog name or a config.json)"
    quant = next((_QUANTS[q] for q in _QUANTS if rest.lower().endswith(q)), None)
    note = f"FROM {text} is the catalog's {model} ({LIBRARY}{name})"
    if quant is None:
        note += "; the tag names no quantization: give -f with the one `ollama show` prints (else the catalog's dtype)"
    else:
        note += f"; format {quant} from the tag"
    return model, quant, note
