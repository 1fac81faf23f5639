"""``--range``: the estimate run again at each uncertainty's low and high values (estimate/ranges.py: the arithmetic).

Each uncertainty is a set of option values the user did not pin, each value a setting the project models:

- allocator: low ``--allocator-fraction 0`` (reserved = allocated); high the larger of the flat default fraction
  and, for training, the replay of the step's allocations through the caching-allocator model
  (``--allocator-replay``); the bound adds the replay with expandable segments (training) or every weight in a
  segment of its own (transformers' inference, ``load_waste``), and for training the replay of a run whose
  batches vary in length, from ``--seq`` to the sequence's high, at the micro-batch itself (``replay_min_seq``:
  estimate/train/allocation.py ``StepTensors.varied_reserve``; with the sequence pinned, identical steps at the
  micro-batch, which the high's one-sequence replay times the micro-batch can miss by 30%). Pinned by
  ``--allocator-fraction``.
- sequence length: low the given ``--seq`` (inference: ``--context``), high ``--max-seq`` or the longest the setup
  admits: the model's position limit, or an engine's own cap (inference: less the new tokens).
- engine release: vLLM's plans of every release (``--vllm-version``), unless one is given.
- CUDA context: the context table's lazy-loading releases (every torch 2.x wheel), unless ``--cuda-version`` or
  ``--cuda-context`` is given; none for llama.cpp (its context is not a PyTorch process's).

A row the setup does not model is left out, and a note says why (``_unmodelled``): textbook mode (no allocator or
CUDA-context term of its own), llama.cpp (its own buffers and context), the CUDA context on an AMD or Apple GPU
(no CUDA release applies; the estimate's term is a stand-in).

Low: every uncertainty at its low together (the release, whose effect is not monotone, tried at each value); high
likewise; bound: the high with the allocator at the worst of its modelled orders. A value the setup's plan
refuses (a vLLM release that does not run the setup, the replay in textbook mode) is left out and the range's
notes say so; a sequence length it refuses is the user's error, in one line. ``fit --max ... --range`` ranges the
setup at the answer (``fit_range``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vramwise.app.run import InferRequest, InferResult, TrainRequest, TrainResult, infer, train
from vramwise.errors import (
    InapplicableOptionError,
    InvalidWorkloadError,
    VramwiseError,
    shown,
)
from vramwise.estimate.overheads import DEFAULT_ALLOCATOR_FRACTION, is_tensor
from vramwise.estimate.positions import check_positions, position_limit
from vramwise.estimate.ranges import (
    ALLOCATOR_BOUND_NOTE,
    Range,
    Uncertainty,
    combine,
    cuda_span,
    load_waste,
    seq_span,
)
from vramwise.report.verdict import Verdict
from vramwise.spec.model import ModelSpec
from vramwise.workload.checks import BOUNDS
from vramwise.workload.engines import VLLM_VERSIONS

if TYPE_CHECKING:  # `vramwise infer --range` loads no fit code (tests/test_architecture.py)
    from vramwise.app.fitting import FitRequest, FitResult
    from vramwise.catalog import Gpu

_NOT_CUDA = ("amd", "apple")  # catalog/gpus.toml segments of GPUs that run no CUDA (ROCm/HIP, Metal)
_GONE = object()  # an override that removes the option (its default applies)
Figure = Callable[[Any], int]  # an estimate (training) or an inference result -> the bytes to range


@dataclass(frozen=True)
class _Setting:
    words: str
    options: Mapping[str, Any]  # overrides of the request's options (``_GONE``: removed)


@dataclass(frozen=True)
class _Dim:
    name: str
    source: str
    lows: tuple[_Setting, ...] = ()  # empty: pinned by the user
    highs: tuple[_Setting, ...] = ()
    bounds: tuple[_Setting, ...] = ()  # values the bound tries besides the highs
    pinned: str = ""  # the value the user gave, in words


def _merged(options: Mapping[str, Any], *settings: _Setting) -> dict[str, Any]:
    out = dict(options)
    for s in settings:
        for key, value in s.options.items():
            if value is _GONE:
                out.pop(key, None)
            else:
                out[key] = value
    return out


class _Runs:
    """Peaks at merged options, each run once; a refused value is noted and left out (``None``)."""

    def __init__(self, options: Mapping[str, Any], peak: Callable[[dict[str, Any]], int]) -> None:
        self.options, self.peak = options, peak
        self.notes: list[str] = []
        self._seen: dict[tuple, int | None] = {}

    def run(self, *settings: _Setting, strict: bool = False) -> int | None:
        options = _merged(self.options, *settings)
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        if key not in self._seen:
            try:
                self._seen[key] = self.peak(options)
            except VramwiseError as err:
                what = ", ".join(s.words for s in settings)
                if strict:
                    raise InvalidWorkloadError(f"--range at {what}: {err}", field=err.field or "range") from None
                self.notes.append(f"left out of the range, not modelled for this setup: {what} ({err})")
                self._seen[key] = None
        return self._seen[key]


def _span(estimate: int, options: Mapping[str, Any], peak: Callable[[dict[str, Any]], int], dims: list[_Dim]) -> Range:
    runs = _Runs(options, peak)
    rows = []
    for d in dims:
        if not d.lows:
            rows.append(Uncertainty(name=d.name, low=d.pinned, high=d.pinned, low_bytes=estimate,
                                    high_bytes=estimate, source=d.source, pinned=True))
            continue
        strict = d.name == "sequence length"
        lows = [(p, s) for s in d.lows if (p := runs.run(s, strict=strict)) is not None]
        highs = [(p, s) for s in d.highs if (p := runs.run(s, strict=strict)) is not None]
        lo = min(lows, key=lambda x: x[0], default=(estimate, _Setting("as estimated", {})))
        hi = max(highs, key=lambda x: x[0], default=(estimate, _Setting("as estimated", {})))
        rows.append(Uncertainty(name=d.name, low=lo[1].words, high=hi[1].words, low_bytes=lo[0],
                                high_bytes=hi[0], source=d.source))
    live = [d for d in dims if d.lows]
    joint_lows = [runs.run(*c) for c in itertools.product(*(d.lows for d in live))] if live else []
    joint_highs = [runs.run(*c) for c in itertools.product(*(d.highs for d in live))] if live else []
    joint_bounds = (
        [runs.run(*c) for c in itertools.product(*(d.highs + d.bounds for d in live))] if live else []
    )
    low, high, bound = combine(
        estimate,
        [p for p in joint_lows if p is not None],
        [p for p in joint_highs if p is not None],
        [p for p in joint_bounds if p is not None],
    )
    notes = [*dict.fromkeys(runs.notes)]
    if any(d.bounds for d in live):
        notes.append(ALLOCATOR_BOUND_NOTE)
    return Range(estimate=estimate, low=low, high=high, bound=bound, uncertainties=tuple(rows), notes=tuple(notes))


def _load_bound(result: InferResult) -> _Setting | None:
    """transformers' inference: the fraction whose reserve is the load's provable most (``load_waste``) plus the
    flat fraction on the other tensors, when that is above the flat fraction on all of them."""
    est, model = result.estimate, result.model
    if str(result.setup.engine) != "hf" or result.setup.hf.device_map is not None:  # one whole model per GPU only
        return None
    if not isinstance(model, ModelSpec) or est.peak_phase is None:
        return None
    live = (*est.persistent, *est.peak_phase.transient)
    tensors = sum(t.bytes for t in live if is_tensor(t.name))
    weights = sum(t.bytes for t in est.persistent if t.name.startswith("weights/"))
    waste = load_waste(model, weights)
    fraction = (waste + DEFAULT_ALLOCATOR_FRACTION * (tensors - weights)) / tensors if tensors else 0.0
    if fraction <= DEFAULT_ALLOCATOR_FRACTION:
        return None
    return _Setting("every weight in a segment of its own", {"allocator_fraction": min(fraction, 0.99)})


def _allocator(
    options: Mapping[str, Any], training: bool, load: _Setting | None = None, shortest: int | None = None
) -> _Dim:
    given = options.get("allocator_fraction")
    flat = f"the flat {DEFAULT_ALLOCATOR_FRACTION:g} of tensor bytes (estimate/overheads.py)"
    source = "low: reserved = allocated; high: " + flat
    if given is not None:
        return _Dim(name="allocator", source="given (--allocator-fraction)", pinned=f"{given:g} (--allocator-fraction)")
    low = _Setting("no reserve (reserved = allocated)", {"allocator_fraction": 0.0})
    default = _Setting(f"flat {DEFAULT_ALLOCATOR_FRACTION:g}", {"allocator_replay": _GONE})
    if not training:
        bound = "; bound: the load's own segments (estimate/ranges.py load_waste) and the flat fraction on the rest"
        return _Dim(name="allocator", source=source + " (inference's allocations are not replayed)"
                    + (bound if load else ""), lows=(low,),
                    highs=(_Setting(f"flat {DEFAULT_ALLOCATOR_FRACTION:g}", {}),), bounds=(load,) if load else ())
    replayed = _Setting("the replay of the step's allocations", {"allocator_replay": True})
    expandable = _Setting("the replay with expandable segments", {"allocator_replay": True,
                                                                   "expandable_segments": True})
    unset = bool(options.get("expandable_segments")) or options.get("max_split_size_mb") is not None
    bounds: tuple[_Setting, ...] = () if options.get("expandable_segments") else (expandable,)
    if shortest is not None:
        # a run whose batches vary in length, from --seq to the sequence's high (the run itself at the high): steps
        # of both lengths replayed in turn at the micro-batch itself (allocation.py StepTensors.varied_reserve)
        varied = {"allocator_replay": True, "replay_min_seq": shortest}
        words = f"steps of {shortest:,} tokens to the high replayed in turn at the micro-batch"
        bounds += (_Setting(words, varied),)
        if not options.get("expandable_segments"):
            bounds += (_Setting(words + ", expandable segments", {**varied, "expandable_segments": True}),)
    return _Dim(
        name="allocator",
        source=f"{source} or the caching-allocator replay (estimate/allocator_model.py, --allocator-replay), the "
        "larger; bound: also with expandable segments"
        + ("; and steps from --seq to the high in turn, replayed at the micro-batch" if shortest is not None else ""),
        lows=(low,),
        highs=(replayed,) if unset else (default, replayed),  # an allocator setting makes the replay the estimate
        bounds=bounds,
    )


def _cuda(options: Mapping[str, Any], compute_capability: str | None) -> _Dim:
    name = "CUDA context"
    if options.get("cuda_context") is not None:
        return _Dim(name=name, source="given (--cuda-context)", pinned=f"{options['cuda_context']} MiB")
    if options.get("cuda_version") is not None:
        return _Dim(name=name, source="given (--cuda-version)", pinned=f"CUDA {options['cuda_version']}")
    low, high = cuda_span(compute_capability)
    return _Dim(
        name=name,
        source="estimate/cuda_context.py's rows over the lazy-loading CUDA releases it measured (every torch 2.x "
        "wheel's), --cuda-version to pin",
        lows=(_Setting(f"CUDA {low}", {"cuda_version": low}),),
        highs=(_Setting(f"CUDA {high}", {"cuda_version": high}),),
    )


def _seq(name: str, given: int, high: int, source: str, flag: str, where: str) -> _Dim:
    if high <= given:
        return _Dim(name="sequence length", source=source, pinned=f"{given:,} tokens ({flag})")
    return _Dim(
        name="sequence length",
        source=f"low: {flag}; high: {source}",
        lows=(_Setting(f"{given:,} tokens ({flag})", {name: given}),),
        highs=(_Setting(f"{high:,} tokens ({where})", {name: high}),),
    )


def _release(engine: str, options: Mapping[str, Any]) -> list[_Dim]:
    if engine != "vllm":
        return []
    source = "the vLLM releases whose memory plans are modelled (engines/vllm_releases.py, --vllm-version)"
    if options.get("vllm_version") is not None:
        return [_Dim(name="engine release", source=source, pinned=f"vLLM {options['vllm_version']} (given)")]
    settings = tuple(_Setting(f"vLLM {v}", {"vllm_version": v}) for v in VLLM_VERSIONS)
    return [_Dim(name="engine release", source=source, lows=settings, highs=settings)]


def _unmodelled(mode: str, engine: str, gpu: Gpu | None) -> dict[str, str]:
    """The rows a setup does not model the uncertainty of (row -> why): a row there could only show a flat span
    (or, on a GPU without CUDA, CUDA releases that mean nothing), so it is left out and a note says why."""
    out: dict[str, str] = {}
    if mode == "textbook":  # the rule of thumb's one overhead term stands for both (estimate/textbook.py)
        out["allocator"] = out["CUDA context"] = "textbook mode has no allocator or CUDA-context term of its own"
    if engine == "llama.cpp":
        out["allocator"] = "llama.cpp allocates its buffers itself, not through PyTorch's caching allocator"
        out["CUDA context"] = "llama.cpp's context is not a PyTorch process's (the context table's rows)"
    if gpu is not None and gpu.segment in _NOT_CUDA:
        out["CUDA context"] = (f"{gpu.label} is not an NVIDIA GPU: CUDA releases do not apply, and the estimate's "
                               "CUDA context is a stand-in")
    return out


def _with_notes(rng: Range, left_out: Mapping[str, str]) -> Range:
    notes = tuple(f"no {row} row: {why}" for row, why in left_out.items())
    return replace(rng, notes=(*rng.notes, *notes)) if notes else rng


def _check_longest(longest: int | None, given: int, flag: str) -> None:
    if longest is not None and longest < given:
        raise InvalidWorkloadError(
            f"--max-seq {longest:,} is shorter than {flag} {given:,}: give the longest sequence, at least {given:,}",
            field="max_seq",
        )


def _admitted(result: InferResult) -> tuple[int | None, str]:
    """The longest sequence the inference setup admits, and what sets it: the model's positions, or the engine's
    own cap when given (vLLM --max-model-len, SGLang --context-length, llama.cpp -c over -np sequences), which
    refuses a longer request."""
    setup = result.setup
    limit = position_limit(result.model) if isinstance(result.model, ModelSpec) else None
    caps = [(limit, "max_position_embeddings")]
    engine = str(setup.engine)
    if engine == "vllm":
        caps.append((setup.vllm.max_model_len, "--max-model-len"))
    elif engine == "sglang":
        caps.append((setup.sglang.context_length, "--context-length"))
    elif engine == "llama.cpp" and setup.llamacpp.ctx_size:
        caps.append((setup.llamacpp.ctx_size // max(1, setup.llamacpp.parallel), "-c / -np"))
    given = [(n, w) for n, w in caps if n]
    return min(given, key=lambda c: c[0]) if given else (None, "")


def _past_positions(rng: Range, model: object, given: int, high: int, extra: int, field: str) -> Range:
    """The range with the note a plain run at its high length gives past a rotary model's trained positions
    (estimate/positions.py check_positions: "needs rope scaling ... estimated as asked"), which the range's own runs
    leave out; a learned table past its rows was already refused by the strict sequence run."""
    if high <= given or not isinstance(model, ModelSpec):
        return rng
    note = check_positions(model, high + extra, field)
    return rng if note is None else replace(rng, notes=(*rng.notes, f"at the high: {note}"))


def _uncomputed(rng: Range, missing: tuple[str, ...]) -> Range:
    """The range with a note naming the terms the estimate could not compute (a bare size has no KV cache or
    activations): its sequence-length row cannot show their growth, and must not read as "no effect"."""
    if not missing:
        return rng
    names = ", ".join(dict.fromkeys(m.split(" ")[0] for m in missing))
    note = f"low, high and bound leave out what the estimate does not compute ({names}): not a range of them"
    return replace(rng, notes=(*rng.notes, note))


def infer_range(
    req: InferRequest, result: InferResult, longest: int | None = None, figure: Figure | None = None
) -> Range:
    """``infer --range``: the peak over the allocator, the context, vLLM's release and the CUDA context.
    ``figure``: the estimate's figure to range instead of its peak (the engines bench)."""

    def peak(options: dict[str, Any]) -> int:
        r = infer(replace(req, options=options))
        if figure is not None:
            return figure(r)
        return r.verdict.peak_bytes if r.verdict else r.estimate.peak_bytes

    setup = result.setup
    options = {k: v for k, v in req.options.items() if k != "seq"} | {"context": setup.context}
    _check_longest(longest, setup.context, "--context")
    limit, what = _admitted(result)
    room = None if limit is None else max(setup.context, limit - setup.new_tokens)
    high, source = seq_span(setup.context, room, longest)
    if longest is None and room is not None:
        source = f"the setup's {what} less --new-tokens"
    left_out = _unmodelled(str(setup.mode), str(setup.engine), result.gpu)
    dims = [
        *(() if "allocator" in left_out else (_allocator(options, training=False, load=_load_bound(result)),)),
        _seq("context", setup.context, high, source, "--context", "--max-seq" if longest is not None else what),
    ]
    dims += _release(str(setup.engine), options)
    if "CUDA context" not in left_out:
        dims.append(_cuda(options, setup.overheads.compute_capability))
    rng = _with_notes(_span(peak(options), options, peak, dims), left_out)
    field = "context + new tokens" if setup.new_tokens else "context"
    rng = _past_positions(rng, result.model, setup.context, high, setup.new_tokens, field)
    return _uncomputed(rng, result.estimate.missing)


def train_range(
    req: TrainRequest, result: TrainResult, longest: int | None = None, figure: Figure | None = None
) -> Range:
    """``train --range``: the peak over the allocator, the sequence length and the CUDA context. ``figure``: the
    estimate's figure to range instead of its peak (the training bench: the figure of the measured kind)."""

    def peak(options: dict[str, Any]) -> int:
        r = train(replace(req, options=options, per_stage=False))
        if figure is not None:
            return figure(r.stages[0].estimate)
        return max(s.verdict.peak_bytes if s.verdict else s.estimate.peak_bytes for s in r.stages)

    setup = result.setup
    options = {**req.options, "seq": setup.seq}
    _check_longest(longest, setup.seq, "--seq")
    limit = position_limit(result.model) if isinstance(result.model, ModelSpec) else None
    high, source = seq_span(setup.seq, limit, longest)
    left_out = _unmodelled(str(setup.mode), "", result.gpu)
    dims = [
        *(() if "allocator" in left_out else (_allocator(options, training=True, shortest=setup.seq),)),
        _seq("seq", setup.seq, high, source, "--seq", "max_position_embeddings" if longest is None else "--max-seq"),
        *(() if "CUDA context" in left_out else (_cuda(options, setup.overheads.compute_capability),)),
    ]
    rng = _with_notes(_span(peak(options), options, peak, dims), left_out)
    rng = _past_positions(rng, result.model, setup.seq, high, 0, "seq")
    return _uncomputed(rng, tuple(m for s in result.stages for m in s.estimate.missing))


def check_range(asked: bool, longest: int | None, emit: str | None) -> bool:
    """Whether ``--range`` is asked, its companions checked: ``--max-seq`` needs it, ``--emit`` cannot show it."""
    if longest is not None and not asked:
        raise InapplicableOptionError("--max-seq sets the high end of --range: add --range or drop --max-seq",
                                      field="max_seq")
    if asked and emit:
        raise InapplicableOptionError("--range reports the estimate's low and high; --emit prints a config instead: "
                                      "drop one", field="range")
    most, why = BOUNDS["seq"]
    if longest is not None and (isinstance(longest, bool) or not isinstance(longest, int) or not 1 <= longest <= most):
        # a sequence length's own bound (workload/checks.py), checked before any run: a 4,000-digit --max-seq was
        # echoed in full (a 5 KB error line), and a negative one was called "shorter than --seq"
        raise InvalidWorkloadError(
            f"--max-seq {shown(longest)}: a sequence length from 1 to {most:,} tokens ({why})",
            field="max_seq", allowed=f"an integer from 1 to {most:,}",
        )
    return asked


def fit_range(req: FitRequest, result: FitResult, longest: int | None = None) -> tuple[Range, Verdict | None, str]:
    """``fit --max ... --range``: the range of the setup at the answer (the largest batch, seq or context that
    fits at the estimate), its verdict, and the option and value it was run at. A sequence or context answer is
    the length itself: the sequence's uncertainty is pinned there."""
    from vramwise.app.fitting import Question

    if result.question is not Question.MAX or result.answer is None:
        raise InapplicableOptionError(
            "fit --range ranges the setup at fit --max's answer; for --min-gpus, --best-format and --layouts run "
            "train or infer --range with the answer's options",
            field="range",
        )
    target = "context" if req.infer and req.target == "seq" else str(req.target)
    value = int(result.answer.value)
    if target != "batch" and longest is not None:
        raise InapplicableOptionError(f"fit --max {req.target} answers the length itself: drop --max-seq",
                                      field="max_seq")
    options = {**req.options, target: value}
    pinned = value if target != "batch" else longest
    if req.infer:
        ireq = InferRequest(model=req.model, options=options, gpu=req.gpu, serve=req.serve, margin=req.margin)
        out = infer(ireq)
        return infer_range(ireq, out, pinned), out.verdict, f"{target} {value:,}"
    treq = TrainRequest(model=req.model, options=options, gpu=req.gpu, margin=req.margin)
    trained = train(treq)
    worst = max(trained.stages, key=lambda s: s.estimate.peak_bytes).verdict
    return train_range(treq, trained, pinned), worst, f"{target} {value:,}"
