"""Inference memory per GPU: weights + KV cache + the larger of the prefill and logits transients + overheads.

One plan (``estimate/plan.py``) describes an estimate for every batch: each term is a constant or bytes per
sequence times the batch, its formula rendered on demand, and the phases list which transients each holds.
``inference_peak`` evaluates the plan's bytes, ``estimate_inference`` renders the same rules, so the solvers'
number is the report's number.
"""

from __future__ import annotations

import functools

from vramwise.errors import InvalidWorkloadError, NeedsArchitectureError
from vramwise.estimate import ssm_state
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.dequant import dequantized_weight
from vramwise.estimate.kv_cache import ENCODER_NOTE, check_generates, kv_cache, sliding_prefill_views
from vramwise.estimate.logits import head_words, logits
from vramwise.estimate.plan import Plan, Rule, Transients, Vars, constant
from vramwise.estimate.positions import inference_positions
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.sharding import check_tp
from vramwise.estimate.term import Estimate, PhaseKind, Term
from vramwise.estimate.vision import cross_kv_cache, format_note, image_notes, vision_phases, with_image_tokens
from vramwise.estimate.weights import buffers, own_format, reads_headers, weight_notes, weight_terms
from vramwise.estimate.workspace import prefill_workspace
from vramwise.formats import DTYPE_BYTES, StorageFormat, get_format, kept_note
from vramwise.spec.load import BareModel, Model
from vramwise.spec.model import ModelSpec
from vramwise.spec.traits import HeadKind
from vramwise.workload import InferSetup
from vramwise.workload.overheads import Overheads

_NEEDS_ARCH = "needs the architecture (layers, heads, hidden size): name a catalog model or a config.json"


@functools.lru_cache(maxsize=1024)
def _weights(spec: ModelSpec, fmt: StorageFormat, c: int, tp: int, own: bool) -> tuple[Rule, ...]:
    return tuple(constant(t) for t in weight_terms(spec, fmt, hp_bytes=c, tp=tp, own_format=own))


@functools.lru_cache(maxsize=64)
def _cuda_context(overheads: Overheads) -> Rule:
    return constant(context_term(overheads))


def _plan(spec: ModelSpec, setup: InferSetup) -> Plan:
    """The estimate's terms and phases; it never reads ``setup.batch`` (the plan serves every batch)."""
    if spec.encoder_decoder is not None:  # T5/mT5: encoder once, decoder generating (estimate/encoder_decoder.py)
        from vramwise.estimate.encoder_decoder import encoder_decoder_plan

        return encoder_decoder_plan(spec, setup)
    check_tp(spec, setup.tp)
    check_generates(spec, setup.new_tokens)
    ssm_state.check_inference(spec, setup.tp)
    asked, setup = setup, with_image_tokens(spec, setup)  # the images' tokens join each prompt
    beyond = inference_positions(spec, setup)
    fmt = get_format(setup.weight_format or own_format(spec))
    c, tp = compute_bytes(fmt.name), setup.tp
    kv_name, kv_bytes = kv_dtype(setup, fmt.name)
    # an encoder (BERT) keeps no keys and values between forwards: no cache term at all
    kv = kv_cache(spec, tokens=setup.tokens, dtype=kv_name, dtype_bytes=kv_bytes, tp=tp, block=setup.kv_block)
    cache = (kv,) if spec.traits.causal_kv_cache else ()
    own = reads_headers(spec, setup.weight_format)  # the checkpoint's own bytes, when its headers were read
    # a hybrid's Mamba layers: a fixed state per sequence beside the attention layers' KV (estimate/ssm_state.py)
    states = ssm_state.state_rules(spec, c=c) if spec.ssm else ()
    persistent = (
        *_weights(spec, fmt, c, tp, own),
        *buffers(spec),
        *cache,
        *cross_kv_cache(spec, images=setup.images, dtype=kv_name, dtype_bytes=kv_bytes, tp=tp),
        *states,
        _cuda_context(setup.overheads),
    )

    # a paged cache (kv_block > 1) copies the window out of the prefill's keys and values
    views = sliding_prefill_views(spec, context=setup.context, dtype_bytes=kv_bytes, tp=tp)
    held = (views,) if views and setup.kv_block == 1 else ()
    chunk = min(setup.prefill_chunk or setup.context, setup.context)
    prefill = prefill_workspace(spec, chunk=chunk, kv_len=setup.context, c=c, attention=setup.attention, tp=tp)
    last = logits(spec, positions=chunk, c=c, last_only=not setup.all_logits)
    out = Transients()
    views_held = out.add(*held)
    dequant, dequant_note = dequantized_weight(spec, fmt, c=c, tp=tp)  # inside a layer, beside its live tensors
    dequantizes = dequant is not None and (chunk > 1 or fmt.dequant == "always")
    in_prefill = out.add(dequant) if dequant is not None and dequantizes else []
    # a vision-language model's tower runs first; its temporaries are gone when the text layers start
    phases = [
        *vision_phases(spec, setup, out, c=c),
        (PhaseKind.PREFILL_LAYER, out.add(prefill) + views_held + in_prefill),
    ]
    if last is not None:  # a bare model (*Model) returns the final hidden states: no logits phase
        phases.append((PhaseKind.PREFILL_LOGITS, out.add(last) + views_held))
    if setup.new_tokens:
        step = prefill_workspace(spec, chunk=1, kv_len=setup.tokens, c=c, attention=setup.attention, tp=tp)
        # one forward per new token with the cache, each ending in the head's output for that position (none
        # for a bare model); only a causal LM's is sampled, the others are cached forwards of one token
        step_logits = logits(spec, positions=1, c=c, last_only=True)
        in_step = in_prefill if fmt.dequant == "always" else []
        # the first step still holds the prefill's views
        phases.append(
            (PhaseKind.DECODE, out.add(step, *(() if step_logits is None else (step_logits,))) + views_held + in_step)
        )

    notes = weight_notes(spec, fmt, hp_bytes=c, own=own)
    notes += [*format_note(spec, fmt.name), *image_notes(spec, asked.images, asked.context, asked.image_pixels)]
    if beyond:
        notes.append(beyond)
    scan = ssm_state.pytorch_scan_note(spec, chunk=chunk) if spec.ssm else None
    if scan:
        notes.append(scan)
    notes += _head_notes(spec, has_logits=last is not None)
    if tp > 1:
        notes.append(f"per GPU of tp={tp}: linear weights, heads and vocabulary split; norms replicated")
    if fmt.note:
        notes.append(fmt.note)
    if fmt.moe_note and spec.moe:
        notes.append(fmt.moe_note)
    if dequant_note and dequantizes:
        notes.append(dequant_note)
    kept = kept_note(spec) if setup.weight_format is None else None
    if kept:
        notes.append(kept)
    fraction = setup.overheads.allocator_fraction
    return out.plan(persistent=persistent, phases=phases, allocator_fraction=fraction, notes=notes)


def _head_notes(spec: ModelSpec, *, has_logits: bool) -> list[str]:
    """What the family's attention and the head architectures[0] names change in the estimate."""
    notes = []
    if not spec.traits.causal_kv_cache:
        notes.append(f"{spec.name} {ENCODER_NOTE}")
    if spec.traits.eager_only:
        notes.append(f"{spec.name} has only its own eager attention (BloomAttention): its scores are counted")
    if spec.head is not HeadKind.CAUSAL_LM:
        labels = f" over {spec.num_labels} labels" if spec.num_labels else ""
        output = "its output is the logits" if has_logits else "no logits: the output is the final hidden states"
        notes.append(f"{spec.name} has {head_words(spec)}{labels}: {output}")
    return notes


_PLANS: dict[tuple, Plan] = {}


def _plan_for(spec: ModelSpec, setup: InferSetup) -> Plan:
    """The plan of every setup that differs from ``setup`` only in the batch: a solver's sweep builds one."""
    key = (spec, setup.static)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        plan = _PLANS[key] = _plan(spec, setup)
    return plan


def inference_peak(model: Model, setup: InferSetup) -> int:
    """Peak bytes per GPU without rendering terms: the number ``estimate_inference`` reports (the solvers'
    path; both read one plan)."""
    if isinstance(model, BareModel):
        return _bare_inference(model, setup).peak_bytes
    return _plan_for(model, setup).peak(Vars.inference(setup.batch))


def estimate_inference(model: Model, setup: InferSetup) -> Estimate:
    """Per-GPU inference memory in accurate mode (textbook mode lives in ``estimate/textbook/``)."""
    if isinstance(model, BareModel):
        return _bare_inference(model, setup)
    return _plan_for(model, setup).render(Vars.inference(setup.batch))


def _bare_inference(model: BareModel, setup: InferSetup) -> Estimate:
    """Only a parameter count: weights at a uniform width; every architecture-dependent term is missing."""
    if setup.images:
        raise InvalidWorkloadError(
            f"--images ({setup.images}) {_NEEDS_ARCH} of a vision-language model", field="images", allowed="0"
        )
    fmt_name = setup.weight_format or "bf16"
    bits = 4 if fmt_name == "int4" else DTYPE_BYTES[fmt_name] * 8 if fmt_name in DTYPE_BYTES else None
    if bits is None:
        get_format(fmt_name)  # unknown names raise the usual error; known ones need the tensor inventory
        raise NeedsArchitectureError(
            f"weight format '{fmt_name}' {_NEEDS_ARCH}; with a bare size use fp32, fp16, bf16, fp8-e4m3, int8 or int4"
        )
    weights = Term(
        name="weights/all",
        bytes=int(model.params * bits / 8 / setup.tp),
        formula=f"Φ {model.params:,} x {bits / 8:g} B" + (f" / tp {setup.tp}" if setup.tp > 1 else ""),
        source="seed 000: memory = parameters x bytes per parameter",
    )
    return Estimate(
        persistent=(weights, context_term(setup.overheads)),
        missing=tuple(
            f"{name} {_NEEDS_ARCH}" for name in ("kv_cache", "activations/prefill_workspace", "activations/logits")
        ),
    )
