"""llama.cpp's compute buffers: the dominant tensors of the prompt graph it reserves, per device, and the host's.
Sources: engines/llamacpp.py's docstring, each rule citing its function at ``VERSION``."""

from __future__ import annotations

from vramwise.engines.llamacpp_context import F32, KQ_MASK_PAD, SRC, Context, pad, sliding
from vramwise.estimate.term import Phase, PhaseKind, Term
from vramwise.spec.model import ModelSpec


def _ffn_bytes(spec: ModelSpec, n_tokens: int) -> tuple[int, str]:
    """The feed-forward's intermediates live together, f32: gate, up and their product (ggml_swiglu_split makes a
    new tensor while both inputs are live), or up and its activation for a plain MLP; MoE: the same over the
    n_expert_used experts each token visits (ggml_mul_mat_id outputs [n_ff_exp, n_expert_used, n_tokens])."""
    if spec.moe is not None:
        k, i = spec.moe.top_k, spec.moe.expert_intermediate_size
        b = 3 * k * i * n_tokens * F32
        return b, f"3 x top_k {k} x n_ff_exp {i:,} x {n_tokens} tokens x 4 B"
    copies = 3 if spec.mlp.gated else 2
    i = spec.mlp.intermediate_size
    return copies * i * n_tokens * F32, f"{copies} x n_ff {i:,} x {n_tokens} tokens x 4 B"


def layer_phase(spec: ModelSpec, ctx: Context, masks: list[Term]) -> Phase:
    h, t, heads = spec.hidden_size, ctx.n_tokens, spec.attention.num_heads
    ffn, ffn_formula = _ffn_bytes(spec, t)
    terms: list[Term] = []
    if not ctx.flash:
        kq = ctx.cells * t * heads * F32
        if kq >= ffn:
            terms.append(
                Term(
                    name="compute/attention_scores",
                    bytes=kq,
                    formula=f"n_kv {ctx.cells:,} x {t} tokens x {heads} heads x 4 B (f32 KQ, softmax in place)",
                    source=f"{SRC} src/llama-graph.cpp build_attn_mha (no flash attention)",
                )
            )
    if not terms:
        terms.append(
            Term(name="compute/ffn", bytes=ffn, formula=ffn_formula, source=f"{SRC} src/llama-graph.cpp build_ffn")
        )
    terms.append(
        Term(
            name="compute/hidden",
            bytes=2 * h * t * F32,
            formula=f"2 x n_embd {h:,} x {t} tokens x 4 B (residual and normed input)",
            source=f"{SRC} src/llama-model.cpp llm_build_* (inpSA, cur)",
        )
    )
    return Phase(kind=PhaseKind.PREFILL_LAYER, transient=(*terms, *masks))


def output_phase(spec: ModelSpec, ctx: Context) -> Phase:
    """The output layer: the masks are gone by then (ggml-alloc frees an input after its last child, the last
    layer's attention: ggml_gallocr_alloc_graph_impl), so the logits and the normed hidden state are the set."""
    v, h, t = spec.vocab_size, spec.hidden_size, ctx.n_tokens
    logits = Term(
        name="compute/logits",
        bytes=v * t * F32,
        formula=f"n_vocab {v:,} x {t} outputs x 4 B (the reserved graph outputs every token)",
        source=f"{SRC} src/llama-context.cpp graph_reserve(n_tokens, n_seqs, n_tokens)",
    )
    hidden = Term(
        name="compute/hidden",
        bytes=h * t * F32,
        formula=f"n_embd {h:,} x {t} tokens x 4 B (result_norm)",
        source=f"{SRC} src/llama-model.cpp llm_build_* (output norm)",
    )
    return Phase(kind=PhaseKind.PREFILL_LOGITS, transient=(logits, hidden))


def mask_sizes(spec: ModelSpec, ctx: Context) -> tuple[list[int], int]:
    """n_kv of each KQ mask (one per cache: the SWA cache has its own) and the rows of each."""
    rows = pad(ctx.n_tokens // ctx.n_stream, KQ_MASK_PAD) * ctx.n_stream
    sizes = [ctx.cells]
    if any(sliding(spec, il) for il in range(spec.num_layers)):
        sizes.append(ctx.swa_cells)
    return sizes, rows


def mask_terms(spec: ModelSpec, ctx: Context) -> list[Term]:
    """The KQ masks a GPU's layers read: f32 without flash attention; with it the f16 copy
    (``ggml_cast(kq_mask, F16)``), the f32 input being freed once cast (its only child)."""
    sizes, rows = mask_sizes(spec, ctx)
    width = 2 if ctx.flash else F32
    if ctx.copies > 1 and not ctx.flash:
        return []  # the layers read the f32 split-input copies (compute/pipeline_copies)
    return [
        Term(
            name="compute/kq_mask",
            bytes=sum(n * rows * width for n in sizes),
            formula=" + ".join(f"n_kv {n:,} x {rows} rows x {width} B" for n in sizes)
            + (" (the f16 copy flash attention reads)" if ctx.flash else " (f32)"),
            source=f"{SRC} src/llama-graph.cpp build_attn_inp_kv (GGML_PAD(n_tokens, GGML_KQ_MASK_PAD))",
        )
    ]


def mask_cast_phase(spec: ModelSpec, ctx: Context) -> Phase | None:
    """With flash attention the layers read an f16 copy of the f32 mask input (src/llama-graph.cpp
    build_attn_inp_kv: ``self_kq_mask_cnv = ggml_cast(ctx0, self_kq_mask, GGML_TYPE_F16)``, line 1501 as vendored by
    ollama v0.12.10). The input lives in the CPU backend's buffer (ggml/src/ggml-backend.cpp
    ggml_backend_sched_backend_id_from_cur: a GGML_TENSOR_FLAG_INPUT tensor goes to the last backend, line 836), and
    the cast runs beside its consumers on the GPU that holds layer 0, so that GPU holds the split-input copy of the
    f32 mask and the f16 result at once, inside layer 0. ggml-alloc frees the copy after its only child, the cast:
    ggml_backend_sched_split_graph flags split-input copies input and output (never freed) only with n_copies > 1
    (lines 1287-1296), which compute/pipeline_copies counts. A public log shows the moment: Llama-3.1-8B at -c 131072
    with flash attention and q4_0 K/V holds 264.01 MiB in its host compute buffer (the f32 mask and inp_embd, no f16
    cast there) and 416 MiB on CUDA0, more than its logits' 258.5 MiB. None where there is no such moment."""
    if not ctx.flash or ctx.copies > 1:
        return None
    sizes, rows = mask_sizes(spec, ctx)
    h, t = spec.hidden_size, ctx.n_tokens
    f32 = sum(n * rows * F32 for n in sizes)
    terms = (
        Term(name="compute/kq_mask_input", bytes=f32,
             formula=" + ".join(f"n_kv {n:,} x {rows} rows x 4 B" for n in sizes) + " (the f32 split-input copy)",
             source=f"{SRC} ggml/src/ggml-backend.cpp ggml_backend_sched_split_graph (input copies)"),
        Term(name="compute/kq_mask", bytes=f32 // 2,
             formula=" + ".join(f"n_kv {n:,} x {rows} rows x 2 B" for n in sizes) + " (its f16 cast)",
             source=f"{SRC} src/llama-graph.cpp build_attn_inp_kv (ggml_cast(kq_mask, GGML_TYPE_F16))"),
        Term(name="compute/hidden", bytes=2 * h * t * F32,
             formula=f"2 x n_embd {h:,} x {t} tokens x 4 B (layer 0's residual and normed input)",
             source=f"{SRC} src/llama-model.cpp llm_build_* (inpSA, cur)"),
    )
    return Phase(kind=PhaseKind.PREFILL_LAYER, transient=terms)


def host_compute(spec: ModelSpec, ctx: Context) -> Term:
    """The CPU backend's compute buffer (the host-pinned one, 'CUDA_Host compute buffer'): the graph's inputs live
    there before each GPU split copies them: the token embeddings get_rows makes from token_embd (the input layer is
    on the CPU) and the f32 masks."""
    sizes, rows = mask_sizes(spec, ctx)
    h, t = spec.hidden_size, ctx.n_tokens
    mask_bytes = sum(n * rows * F32 for n in sizes)
    copies = f" x {ctx.copies} copies (pipeline parallelism)" if ctx.copies > 1 else ""
    return Term(
        name="host/compute_buffer",
        bytes=h * t * F32 + mask_bytes * ctx.copies,
        formula=f"inp_embd n_embd {h:,} x {t} tokens x 4 B + f32 masks {mask_bytes:,} B{copies}",
        source=f"{SRC} src/llama-context.cpp (backend_cpu with the device's host buffer type)",
    )


def pipeline_copies(spec: ModelSpec, ctx: Context) -> Term:
    """ggml_backend_sched_split_graph with n_copies > 1: every split input gets n_copies copies on the split's
    device, flagged input and output so that ggml-alloc never frees them: the hidden state coming from the previous
    device (the CPU's token embeddings on the first GPU) and the f32 masks."""
    sizes, rows = mask_sizes(spec, ctx)
    h, t = spec.hidden_size, ctx.n_tokens
    mask_bytes = sum(n * rows * F32 for n in sizes)
    return Term(
        name="compute/pipeline_copies",
        bytes=ctx.copies * (h * t * F32 + mask_bytes),
        formula=f"{ctx.copies} copies x (hidden n_embd {h:,} x {t} tokens x 4 B + f32 masks {mask_bytes:,} B)",
        source=f"{SRC} ggml/src/ggml-backend.cpp ggml_backend_sched_split_graph (GGML_SCHED_MAX_COPIES)",
    )
