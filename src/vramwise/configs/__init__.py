"""Speak the frameworks' language: read their configs into vramwise's options, write theirs from a setup.

``load(source)`` reads a file (DeepSpeed JSON, HF TrainingArguments / TRL SFTConfig as JSON or YAML, Axolotl
YAML, torchtune YAML recipes, Ollama Modelfiles) or a pasted command line (``vllm serve``, SGLang's
``launch_server``, ``llama-server``, a training script's ``--per_device_train_batch_size ...`` arguments) and returns
an ``Imported``: the option values by the command line's option names, the model the file names, the framework
whose ``--framework`` preset fills the rest, and which keys were used and which ignored. A key that changes the
memory and that vramwise does not model, a wrong type or a contradiction is one ``ConfigError`` naming the key.

``emit(fmt, model, setup)`` (``emit.py``) writes the runnable config or command of a setup; importing it gives
the same setup back (tests/configs/test_roundtrip.py).

This package sits above ``workload`` and ``catalog`` and below ``app`` (tests/test_architecture.py): it reads
files and produces option values; ``app/imports.py`` merges them under the command line's options. The importers
are imported only when ``--from`` is given (a fresh ``vramwise infer`` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramwise.configs.imported import Imported


def load(source: str) -> Imported:
    """The options ``source`` (a file's path, or a command line pasted as one argument) sets."""
    from vramwise.configs.reader import load as _load

    return _load(source)


__all__ = ["load"]
