"""What a ``fit`` answer holds for: its assumptions in words (the header's "assuming" line), and its rounding.

A context or sequence answer is rounded down to a multiple of ``ROUND_TO`` tokens: 33,712 fits to the byte but is
not a length anyone configures, and an answer at 0.00 GiB headroom leaves nothing for the allocator's luck. The
answer then shows the estimate at the rounded value and at one step of ``ROUND_TO`` beyond it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramwise.estimate.term import Estimate
    from vramwise.fit.solve import Answer
    from vramwise.workload import InferSetup, TrainSetup

ROUND_TO = 256  # tokens: a usable max_model_len / -c / --seq (a multiple of every paged KV block size in use)


def rounded(answer: Answer, at: Callable[[int], Estimate], step: int = 1) -> Answer:
    """The answer rounded down to a multiple of ROUND_TO (and of ``step``, context parallelism's split), with the
    estimates at it and one rounding step beyond; unchanged below ROUND_TO or when ``step`` does not divide it."""
    value = int(answer.value)
    if value < ROUND_TO or ROUND_TO % step:
        return answer
    low = value // ROUND_TO * ROUND_TO
    if low == value and answer.next_value is None:
        return answer
    nxt = low + ROUND_TO
    beyond = at(nxt) if answer.next_value is not None or nxt <= value else None
    return replace(answer, value=low, at=at(low), next_value=nxt if beyond is not None else None, beyond=beyond)


def _margin(margin: float) -> list[str]:
    return [f"margin {margin:.0%} of each GPU kept free"] if margin else []


def train_assumptions(setup: TrainSetup, question: object, margin: float = 0.0) -> tuple[str, ...]:
    """The training recipe the answer holds for, in the options' own words; ``question`` is what is searched
    (batch, seq, min_gpus, layouts), left out of the list."""
    f = setup.to_flat()
    if str(question) == "layouts":  # the search varies the layout, micro-batch, recompute and offload itself
        kept = [f"seq {f['seq']:,}", f"{f['precision']}", f"optimizer {f['optimizer']}", f"peft {f['peft']}",
                f"loss {f['loss']}", *_margin(margin)]
        return tuple(kept)
    layout = f"dp {f['dp']} tp {f['tp']} pp {f['pp']}" + (f" cp {f['cp']}" if f["cp"] > 1 else "")
    shard = f"zero {f['zero']}" if f["zero"] else f"fsdp {f['fsdp']}" if f["fsdp"] != "none" else "no sharding"
    said = [
        f"micro-batch {f['batch']}" if str(question) != "batch" else "",
        f"seq {f['seq']:,}" if str(question) != "seq" else "",
        f"grad-accum {f['grad_accum']}",
        f"{f['precision']}",
        f"optimizer {f['optimizer']}",
        f"peft {f['peft']}",
        f"recompute {f['recompute']}",
        f"loss {f['loss']}",
        layout if str(question) != "min_gpus" else f"tp {f['tp']} pp {f['pp']}, dp searched",
        shard if str(question) != "min_gpus" or f["zero"] or f["fsdp"] != "none" else "zero 3",
        f"offload {f['offload']}",
        *_margin(margin),
        f"the answer rounded down to a multiple of {ROUND_TO}" if str(question) == "seq" else "",
    ]
    return tuple(s for s in said if s)


def infer_assumptions(setup: InferSetup, question: object, margin: float = 0.0) -> tuple[str, ...]:
    """The inference setup the answer holds for."""
    said = [
        "transformers generate (engine hf)" if str(setup.engine) == "hf" else f"engine {setup.engine}",
        f"batch {setup.batch}" if str(question) != "batch" else "",
        f"context {setup.context:,}" if str(question) not in ("seq", "context") else "",
        f"{setup.new_tokens:,} new tokens",
        f"format {setup.weight_format or 'the checkpoint'}" if str(question) != "best_format" else "",
        "KV in the compute dtype" if str(setup.kv_dtype) == "auto" else f"KV {setup.kv_dtype}",
        f"tp {setup.tp}",
        f"prefill chunk {setup.prefill_chunk:,}" if setup.prefill_chunk else "",
        *_margin(margin),
        f"the answer rounded down to a multiple of {ROUND_TO}" if str(question) in ("seq", "context") else "",
    ]
    return tuple(s for s in said if s)
