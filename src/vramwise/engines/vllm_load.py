"""What vLLM loads and accepts on one rank, the same in every release modelled (V0 and V1 plans read it).

``max_model_len``: the context vLLM sizes its KV check by; ``loaded_weights``: the weight terms as loaded on this
rank, with MXFP4 experts in the layout of vLLM's MoE backend, the rotary table (engines/rope_cache.py) and a
pipeline stage's share of the layers.
"""

from __future__ import annotations

from vramwise.catalog import Gpu
from vramwise.engines.rope_cache import rope_cache_term
from vramwise.engines.vllm_mxfp4 import experts_term
from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.term import Term
from vramwise.estimate.weights import reads_headers, weight_terms
from vramwise.formats import get_format
from vramwise.spec.model import ModelSpec
from vramwise.workload import InferSetup

# The categories the decoder layers hold: a pipeline stage loads its share of these (embeddings and head go to the
# first and last stages).
_LAYER_CATEGORIES = ("attention", "mlp", "experts", "norms", "ssm")


def max_model_len(spec: ModelSpec, setup: InferSetup) -> int:
    """--max-model-len, or the model's own context (vllm/config/model.py _get_and_verify_max_len: the config's
    max_position_embeddings); the requested sequence must fit it, as vLLM rejects a longer request."""
    max_len = setup.vllm.max_model_len or spec.max_position_embeddings
    if not max_len:
        raise InvalidWorkloadError(
            f"{spec.name}'s config gives no max_position_embeddings: give --max-model-len", field="max_model_len"
        )
    if setup.tokens > max_len:
        raise InvalidWorkloadError(
            f"context + new tokens ({setup.tokens:,}) is more than max_model_len ({max_len:,}): vLLM rejects such a "
            "request; give a shorter --context or a larger --max-model-len",
            field="max_model_len",
        )
    return max_len


def loaded_weights(
    spec: ModelSpec, setup: InferSetup, *, fmt_name: str, c: int, layers: int, gpu: Gpu
) -> tuple[Term, ...]:
    """The weights as loaded on this rank (the existing weight terms: checkpoint headers when read; MXFP4 experts
    in the layout of vLLM's MoE backend for this GPU, engines/vllm_mxfp4.py), the decoder layers' share cut to this
    stage's layers under a pipeline."""
    own = reads_headers(spec, setup.weight_format)
    terms = weight_terms(spec, get_format(fmt_name), hp_bytes=c, tp=setup.tp, own_format=own)
    cc = gpu.compute_capability
    chosen = setup.vllm.mxfp4_backend
    experts = experts_term(spec, tp=setup.tp, compute_capability=cc, chosen=chosen) if fmt_name == "mxfp4" else None
    if experts is not None:
        terms = tuple(experts if t.name == "weights/experts" else t for t in terms)
    # the rotary table every stage builds with its first attention layer (engines/rope_cache.py)
    rope, _ = rope_cache_term(spec, c=c, engine="vllm", release=setup.vllm.version)
    terms = (*terms, rope) if rope is not None else terms
    pp = setup.vllm.pipeline_parallel_size
    if pp == 1:
        return terms
    out = []
    for t in terms:
        category = t.name.split("/", 1)[1]
        if category in _LAYER_CATEGORIES:
            share = t.bytes * layers // spec.num_layers
            out.append(Term(name=t.name, bytes=share, formula=f"{layers}/{spec.num_layers} layers of ({t.formula})",
                            source=t.source))
        elif category == "embeddings" and not any(x.name == "weights/head" for x in terms):
            out.append(t)  # a tied head: the last stage loads its own copy of the embedding matrix as the head
        elif category != "embeddings":
            out.append(t)
    return tuple(out)


def rope_notes(spec: ModelSpec, setup: InferSetup, c: int) -> tuple[str, ...]:
    """The report's note when the model's rotary table is not modelled (loaded_weights leaves it out)."""
    _, note = rope_cache_term(spec, c=c, engine="vllm", release=setup.vllm.version)
    return (note,) if note else ()
