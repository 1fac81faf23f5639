"""What an importer returns: option values by the command line's names, and what it used and ignored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, kw_only=True)
class Imported:
    """One file or command line read into vramwise's options."""

    kind: str  # what was read: "deepspeed", "trainer", "axolotl", "torchtune", "vllm", "sglang", "llama.cpp", ...
    command: Literal["train", "infer"]  # the question it describes
    options: dict[str, Any]  # option name (the CLI's, ``grad_accum``) -> value
    model: str | None = None  # the model the file names (axolotl base_model, vllm serve MODEL), else None
    used: tuple[str, ...] = ()  # the file's keys that set an option
    ignored: tuple[str, ...] = ()  # the file's keys that do not change the memory (logging, data, schedule)
    notes: tuple[str, ...] = ()  # what the importer assumed (a default it applied, an "auto" it resolved)
    # options a DeepSpeed "auto" leaves to the model's hidden size (deepspeed.py HIDDEN_AUTO), filled by app/imports.py
    hidden_auto: tuple[str, ...] = ()

    def summary(self, source: str) -> tuple[str, ...]:
        """The lines that say what was read: the keys used, the keys ignored, then the importer's notes."""
        head = f"--from {source} ({self.kind})"
        used = f"{head}: used {', '.join(self.used)}" if self.used else f"{head}: no key sets an option"
        lines = [used]
        if self.ignored:
            lines.append(f"{head}: ignored (no effect on memory) {', '.join(self.ignored)}")
        return (*lines, *(f"{head}: {n}" for n in self.notes))
