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
# case-insensitive: ollama's names are ("Mistral" and "mistral" are the same model: types/model/name.go, the Name
# doc and Name.EqualFold / MapHash, which compare the parts down-cased)
_REFERENCE = re.compile(r"(?:library/)?(?P<name>[a-z0-9][a-z0-9._-]*)(?::(?P<tag>[A-Za-z0-9._-]+))?", re.I)
# a GGUF on the Hugging Face hub as Ollama pulls it: hf.co/{user}/{repo}[:{quantization}] (ollama docs/import.md
# and huggingface.co/docs/hub/ollama); the tag is the GGUF's quantization, "latest" (or none) the repo's default
_HUB = re.compile(r"(?:hf\.co|huggingface\.co)/(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<tag>[\w.-]+))?", re.I)
# a quantization at the end of a tag, mapped or not: llama.cpp's type names as the library's tags spell them
# (q2_K, q3_K_M, q4_K_S, q5_0, iq4_xs, fp16, ...)
_QUANT_SUFFIX = re.compile(r"(?:^|-)(?P<quant>i?q\d[a-z0-9_]*|fp16|bf16|fp32)$", re.I)


def is_library_reference(text: str) -> bool:
    """Whether FROM's text reads as an Ollama library reference rather than a GGUF file or a folder."""
    return (
        not text.lower().endswith(".gguf")
        and not text.startswith((".", "/", "~"))
        and _REFERENCE.fullmatch(text) is not None
    )


def hub_gguf(text: str) -> tuple[str, str] | None:
    """``hf.co/user/repo:Q4_K_M`` as vramwise's hub GGUF reference ``user/repo:Q4_K_M`` (spec/load.py reads its
    header: llama.cpp's -hf form, the same default tag when none), and a note; None when not such a reference."""
    m = _HUB.fullmatch(text)
    if m is None:
        return None
    tag = m.group("tag")
    ref = m.group("repo") + (f":{tag}" if tag and tag.lower() != "latest" else "")
    return ref, f"FROM {text} is the hub GGUF {ref} (Ollama pulls hf.co/USER/REPO:QUANT from the Hugging Face hub)"


def resolve(text: str) -> tuple[str | None, str | None, str]:
    """(catalog model or None, format the tag names or None, a note saying what was mapped or why not)."""
    m = _REFERENCE.fullmatch(text)
    if m is None:
        return None, None, f"FROM {text}: not an Ollama library reference"
    name, tag = m.group("name").lower(), m.group("tag") or "latest"
    size, _, rest = tag.partition("-")
    model = NAMES.get((name, size.lower()))
    if model is None:
        sizes = [s for n, s in NAMES if n == name]
        # a size the table does not have (mixtral:8x22b) or none (latest): the sizes it has, never a made-up one
        why = (f"the tag {tag!r} names no size vramwise maps for {name} (it maps {', '.join(sizes)})" if sizes
               else "no catalog model in vramwise's Ollama table (configs/ollama_names.py)")
        return None, None, f"FROM {text}: {why}: give MODEL (a catalog name or a config.json)"
    named = _QUANT_SUFFIX.search(rest)
    quant = _QUANTS.get(named.group("quant").lower()) if named else None
    note = f"FROM {text} is the catalog's {model} ({LIBRARY}{name})"
    if quant is not None:
        note += f"; format {quant} from the tag"
    elif named is not None:  # a quantization the formats do not model: said, not estimated as another
        note += (f"; the tag's quantization {named.group('quant')} is not a format vramwise models (`vramwise "
                 "formats`): the estimate uses the catalog's dtype unless -f gives one")
    else:
        note += "; the tag names no quantization: give -f with the one `ollama show` prints (else the catalog's dtype)"
    return model, quant, note
