"""``--from``: which importer reads a file or a pasted command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vramwise.configs import axolotl, deepspeed, hf_trainer, llama_factory, serve, torchtitan, torchtune
from vramwise.configs.imported import Imported
from vramwise.configs.source import parse, read_text, split_command
from vramwise.errors import ConfigError, shown

KINDS = (
    "a DeepSpeed JSON, HF TrainingArguments/SFTConfig (JSON, YAML), an Axolotl or torchtune YAML, an Ollama "
    "Modelfile, or a command line (vllm serve, python -m sglang.launch_server, llama-server, a training script's "
    "--arguments)"
)


def load(source: str) -> Imported:
    """The options ``source`` sets: a file's path, or a command line pasted as one argument."""
    path = Path(source)
    if not _exists(path) and (" " in source.strip() or "\n" in source):
        return from_command(split_command(source))
    text = read_text(path)
    if path.name.lower().startswith("modelfile") or _first_word(text) == "FROM":
        return serve.from_modelfile(text)
    if path.suffix.lower() in ("", ".sh", ".txt", ".cmd"):
        return from_command(split_command(text))
    data = parse(path, text)
    return from_mapping(data, path)


def from_mapping(data: dict[str, Any], path: Path | None = None) -> Imported:
    """A parsed JSON/YAML mapping, by what its keys say it is."""
    base = path.parent if path is not None else None
    if torchtitan.is_torchtitan(data):
        return torchtitan.read(data)
    if torchtune.is_torchtune(data):
        return torchtune.read(data)
    if llama_factory.is_llama_factory(data):
        return llama_factory.read(data, base, _load_json)
    if axolotl.is_axolotl(data):
        return axolotl.read(data, base, _load_json)
    if deepspeed.is_deepspeed(data):
        return deepspeed.read(data)
    if hf_trainer.is_trainer(data):
        return hf_trainer.read(data, base, _load_json)
    where = f" {shown(str(path), quote=False)}" if path else ""
    raise ConfigError(
        f"--from{where}: cannot tell which framework's config this is; vramwise reads {KINDS}",
        field="from",
        allowed=KINDS,
    )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a pasted command line longer than a file name may be, or with a NUL
        return False


def _load_json(path: Path) -> dict[str, Any]:
    return parse(path, read_text(path))


def _first_word(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.split()[0].upper()
    return ""


def from_command(words: list[str]) -> Imported:
    """``vllm serve ...``, ``python -m sglang.launch_server ...``, ``llama-server ...`` or a training script's line."""
    words = [w for w in words if not _is_env(w)] if words else words
    if not words:
        raise ConfigError("--from: an empty command line", field="from", allowed=KINDS)
    head = Path(words[0]).name
    if head == "vllm" and len(words) > 1 and words[1] == "serve":
        return serve.from_vllm(words, 2)
    if head.startswith("python") and len(words) > 2 and words[1] == "-m":
        module = words[2]
        if module == "vllm.entrypoints.openai.api_server":
            return serve.from_vllm(words, 3)
        if module in ("sglang.launch_server", "sglang.srt.server"):
            return serve.from_sglang(words, 3)
    if head in ("llama-server", "llama-cli", "server", "main"):
        return serve.from_llama(words, 1)
    if (
        head in ("torchrun", "accelerate", "deepspeed")
        or any(w.endswith(".py") for w in words)
        or head.startswith("--")
    ):
        return hf_trainer.from_arguments(words)
    raise ConfigError(
        f"--from: {shown(words[0])} is not a command vramwise reads; it reads {KINDS}", field="from", allowed=KINDS
    )


def _is_env(word: str) -> bool:
    """``CUDA_VISIBLE_DEVICES=0`` before the command."""
    name, eq, _ = word.partition("=")
    return bool(eq) and name.isupper() and name.replace("_", "").isalnum()
