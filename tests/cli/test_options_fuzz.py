"""Seeded random requests through the servers' path (``parse_options`` then ``app.documents.document_for``): every
one is answered or refused with one ``VramwiseError`` (the web API's 400, MCP's error result), never another
exception (a 500, a traceback on the command line).

Oracle: the error contract itself. Each request is a catalog model and GPU with up to seven options of the table
at random values (their choices, small and extreme integers, fractions, odd text). Fuzzing this way found
`train --framework megatron --cuda-context 8` raising a TypeError (app/fitting.py). The caching-allocator replay
options are left out: correct but up to a minute on a large MoE model (bench territory, not a unit test's).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from vramwise.app.documents import document_for
from vramwise.catalog import gpus, models
from vramwise.cli.json_args import names_of
from vramwise.cli.options import SUGGESTED, Option, parse_options, setup_values, tokens
from vramwise.errors import VramwiseError

REQUESTS = 900
SLOW = {"expandable-segments", "max-split-size-mb", "allocator-replay"}
QUESTIONS = ("max", "min-gpus", "best-format", "layouts")
_SMALL_MODELS = tuple(m for m in models() if not m.startswith(("deepseek", "llama-3.1-405b", "qwen3-235b")))


def _value(rng: random.Random, option: Option) -> Any:
    if option.type is None:
        return True
    choices = option.choices or SUGGESTED.get(option.name)
    if choices and rng.random() < 0.9:
        return rng.choice(choices)
    if option.type in (int, tokens):
        return rng.choice([0, 1, 2, 3, 4, 8, 16, 64, 1000, 4096, 10**6, -1, 2**40])
    if option.type is float:
        return rng.choice([0.0, 0.1, 0.5, 0.9, 1.0, 1.5, -0.1])
    return rng.choice(["x", "1", "auto", "24GiB", "2xh100", "0", ""])


def _request(rng: random.Random) -> tuple[str, dict[str, Any]]:
    command = rng.choice(["infer", "train", "fit"])
    names = names_of(command)
    args: dict[str, Any] = {"model": rng.choice(_SMALL_MODELS)}
    gpu = rng.choice(sorted(gpus()))
    if command == "fit" or rng.random() < 0.7:
        args["gpu"] = gpu if rng.random() < 0.8 else f"{rng.choice([2, 4, 8])}x{gpu}"
    if command == "fit":
        question = rng.choice(QUESTIONS)
        args[question] = {"max": rng.choice(["batch", "seq", "context"]), "layouts": rng.choice([2, 4, 8])}.get(
            question, True)
    free = sorted(k for k in names if k != "model" and k not in SLOW and k not in QUESTIONS)
    for key in rng.sample(free, rng.randint(0, 7)):
        args[key] = _value(rng, names[key])
    return command, args


@pytest.mark.parametrize("seed", range(3))
def test_every_request_is_answered_or_refused_in_one_line(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(REQUESTS // 3):
        command, args = _request(rng)
        try:
            values = parse_options(command, args)
            document_for(command, values, setup_values(values))
        except VramwiseError as err:
            assert str(err) and "\n" not in str(err).strip(), (command, args, str(err))
