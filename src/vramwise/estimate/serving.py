"""Serving capacity on one GPU (per tp rank) with vLLM's budget rule.

vLLM (v1 gpu_worker.determine_available_memory) gives the KV cache whatever is left of
``gpu_memory_utilization x total`` after the weights, the peak activation of a profiling forward of
``max_num_batched_tokens`` tokens, and the non-torch memory (CUDA context, NCCL). The KV pool is cut into
blocks of ``block_size`` tokens; a sequence of n tokens takes ceil(n / block) blocks in every layer
(sliding-window layers at most ceil(window / block)). A state-space hybrid's Mamba layers take one page each
per sequence, the attention block grown to hold it (vLLM's hybrid rule, estimate/ssm_state.py ``vllm_block``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.estimate.encoder_decoder import refuse
from vramwise.estimate.kv_cache import kv_cache, kv_elements_per_token
from vramwise.estimate.overheads import cuda_context_term
from vramwise.estimate.plan import Vars
from vramwise.estimate.precision import compute_bytes, kv_dtype
from vramwise.estimate.ssm_state import check_inference, vllm_block
from vramwise.estimate.term import Term
from vramwise.estimate.weights import own_format, reads_headers, weight_terms
from vramwise.estimate.workspace import prefill_workspace
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.spec.ssm import attention_layer_count, ssm_layer_count
from vramwise.workload import InferSetup

DEFAULT_MAX_BATCHED_TOKENS = 8192  # vLLM's default for the OpenAI server on >= 70 GiB GPUs (2048 below)


@dataclass(frozen=True, kw_only=True)
class Capacity:
    budget: Term  # bytes the KV pool gets
    kv_bytes_per_token: int  # all layers, one token, one sequence (no window bound)
    kv_tokens: int  # tokens of KV that fit, as vLLM logs "GPU KV cache size"
    sequence_tokens: int  # s + n of the requested workload
    max_sequences: int  # concurrent sequences of sequence_tokens that fit
    # a hybrid's Mamba layers: their state pages per sequence in vLLM's pool, beside the attention layers' KV
    # blocks (0 for a transformer); max_sequences counts it, kv_tokens does not
    state_bytes_per_sequence: int = 0


def serving_capacity(
    spec: ModelSpec, setup: InferSetup, gpu_bytes: int, max_batched_tokens: int | None = None
) -> Capacity:
    refuse(spec, "--serve (vLLM's budget rule; vLLM does not serve T5)")
    fmt = get_format(setup.weight_format or own_format(spec))
    c = compute_bytes(fmt.name)
    kv_name, kv_b = kv_dtype(setup, fmt.name)
    own = reads_headers(spec, setup.weight_format)  # the checkpoint's own bytes, when its headers were read
    weights = sum(t.bytes for t in weight_terms(spec, fmt, hp_bytes=c, tp=setup.tp, own_format=own))
    profile_tokens = max_batched_tokens or DEFAULT_MAX_BATCHED_TOKENS
    one = Vars.inference(batch=1)
    activation = prefill_workspace(
        spec, chunk=profile_tokens, kv_len=profile_tokens, c=c, attention=setup.attention, tp=setup.tp
    ).bytes(one)  # one sequence of profile_tokens
    non_torch = cuda_context_term(setup.overheads.cuda_context_mib).bytes
    usable = int(gpu_bytes * setup.gpu_utilization)
    budget = max(0, usable - weights - activation - non_torch)
    # only attention layers cache K and V; a Mamba layer holds one state page per sequence (estimate/ssm_state.py)
    check_inference(spec, setup.tp)
    layer_token = int(kv_elements_per_token(spec, setup.tp) * kv_b)
    per_token = layer_token * attention_layer_count(spec)
    block, state = setup.kv_block, 0
    if spec.ssm:
        block, page = vllm_block(spec, attention_page_per_token=layer_token, c=c, block=setup.kv_block)
        state = ssm_layer_count(spec) * page
    kv = kv_cache(spec, tokens=setup.tokens, dtype=kv_name, dtype_bytes=kv_b, tp=setup.tp, block=block)
    per_seq = kv.bytes(one) + state
    block_bytes = per_token * block
    return Capacity(
        budget=Term(
            name="kv_budget",
            bytes=budget,
            formula=(
                f"{setup.gpu_utilization:g} x {gpu_bytes:,} - weights {weights:,} - profile activation "
                f"({profile_tokens} tokens) {activation:,} - non-torch {non_torch:,}"
                + (
                    f"; each sequence also holds one page per Mamba layer, {state:,} B in all (vLLM's hybrid rule "
                    f"without prefix caching: attention blocks of {block} tokens, Mamba state in the model dtype "
                    "padded to one attention page)"
                    if state
                    else ""
                )
            ),
            source="vLLM v1 gpu_worker.determine_available_memory",
        ),
        kv_bytes_per_token=per_token,
        kv_tokens=budget // block_bytes * block if block_bytes else 0,
        sequence_tokens=setup.tokens,
        max_sequences=budget // per_seq if per_seq else 0,
        state_bytes_per_sequence=state,
    )
