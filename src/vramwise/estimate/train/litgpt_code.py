"""LitGPT's own model code (``--framework litgpt``): what its decoder layer saves for backward, per token.

LitGPT does not train transformers' modules: lit_gpt/model.py (lit-gpt 8641822, the commit of its published
resource tables) has one fused ``attn`` linear for q, k and v, its own RMSNorm and its LoRA in lit_gpt/lora.py.
Where that code keeps different tensors from transformers' (estimate/train/activations.py), per token of one
layer (c = compute bytes, h hidden, q = heads x head_dim, kv = kv heads x head_dim, a = adapter bytes):

  RMSNorm           lit_gpt/rmsnorm.py RMSNorm.forward: ``x * x`` and ``x * rsqrt(...)`` in the input's dtype,
                    no fp32 upcast: the input (c·h) and rsqrt (c), plus ``x_normed`` (c·h) when the weight trains.
  k and v           model.py CausalSelfAttention.forward: ``qkv.view(...).permute(...)``, split, ``reshape``.
                    With as many query groups as heads (MHA), or one (MQA), v's reshape is a view of the fused qkv
                    output, so the sdpa kernel's saved v keeps all of it alive: c·(q + 2kv); k is rotary's new
                    tensor (c·kv, the query heads' width under MHA). With 1 < groups < heads, ``k.expand`` and
                    ``v.expand`` then ``reshape`` copy both to every query head: c·q each.
  o_proj input      q comes from ``torch.cat`` (b, heads, s, d)-contiguous, so ``y.reshape(B, T, C)`` is a copy,
                    kept only when proj trains or keeps its input (a 4-bit base, below).
  LoRA on q/k/v     lora.py LoRAQKVLinear.forward: one adapter for the fused linear, one dropout (a 1-byte CUDA
                    mask and the dropped copy, a·h), ``after_A`` (a·r per enabled part) kept by ``conv1d``, and,
                    unless q, k and v are all enabled, ``zero_pad``'s ``index_copy`` keeps its source, the
                    adapters' output before padding: a·(enabled widths).
  a 4-bit base      bitsandbytes 0.41.1 (the tables' version) MatMul4Bit.forward keeps ``ctx.tensors = (A, B)``:
                    every frozen 4-bit linear keeps its input (0.48 keeps ``(None, B)``); see ``inputs_kept``.
The MLP (LLaMAMLP, GptNeoxMLP) saves what transformers' does, and a LayerNorm is torch's in both.
"""

from __future__ import annotations

from dataclasses import replace

from vramwise.errors import InvalidWorkloadError, shown
from vramwise.estimate.plan import BATCH, TOKENS, Rule
from vramwise.estimate.term import Term
from vramwise.estimate.train.activations import Grads, Saved, Shape, _linear_input, _mlp, _norm
from vramwise.estimate.train.layout import in_layer
from vramwise.estimate.train.lora import LoraModule, linear_modules
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.workload import PeftMethod, Precision, TrainSetup
from vramwise.workload.options import Framework, KernelImpl, LossImpl

LITGPT = Framework.LITGPT
SRC = "lit-gpt 8641822 lit_gpt/model.py, lit_gpt/lora.py, lit_gpt/rmsnorm.py"
_QKV = ("attention.q", "attention.k", "attention.v")
_PART = {"attention.q": "q_proj", "attention.k": "k_proj", "attention.v": "v_proj"}  # LoRAQKVLinear's parts


def runs_litgpt_code(setup: TrainSetup) -> bool:
    """Whether the step runs LitGPT's model code rather than transformers' (keyed by the framework)."""
    return setup.framework == LITGPT


def keeps_4bit_inputs(setup: TrainSetup) -> bool:
    """bitsandbytes 0.41.1 (LitGPT's tables) MatMul4Bit.forward: ``ctx.tensors = (A, B)`` for a 4-bit base."""
    return runs_litgpt_code(setup) and setup.peft.method == PeftMethod.QLORA


def check_litgpt(spec: ModelSpec, setup: TrainSetup) -> None:
    """Refuse, in one line, what LitGPT's model code is not modelled for."""
    if not runs_litgpt_code(setup):
        return
    why = ""
    if spec.moe is not None or spec.attention.kind == "mla":
        why = "mixture-of-experts and MLA layers of LitGPT's model code are not modelled"
    elif spec.attention.qk_norm != "none":
        why = "q/k norms are not in LitGPT's model code at lit-gpt 8641822"
    field, allowed = "framework", "a dense decoder (Llama, Falcon, Mistral-style), or another framework"
    if not why and setup.precision.recipe in (Precision.AMP, Precision.AMP_FP16):
        field, allowed = "precision", "bf16 or fp32 (LitGPT's --precision bf16-true, 32-true)"
        why = "LitGPT's model code under autocast (--precision bf16-mixed) is not modelled"
    impl = setup.impl
    knobs = {"norm_impl": impl.norm_impl == KernelImpl.FUSED, "mlp_impl": impl.mlp_impl == KernelImpl.FUSED}
    knob = next((name for name, on in {**knobs, "compile": impl.compile}.items() if on), None)
    if not why and knob:
        field, allowed = knob, "composite, no compile (LitGPT's own modules)"
        why = "LitGPT's finetune scripts at lit-gpt 8641822 run their own modules, without Liger kernels or compile"
    if not why and setup.loss != LossImpl.COMPUTE_DTYPE:
        # the script's loss is fixed: model(input_ids, lm_head_chunk_size=128) and chunked_cross_entropy on the
        # chunks Fabric casts to fp32 and the loop keeps (litgpt_loss_rules); another loss's plan would drop them
        field, allowed = "loss", "compute-dtype (LitGPT's chunked_cross_entropy; --loss-chunk for the chunk)"
        why = f"lit-gpt 8641822 finetune/lora.py computes its own chunked cross entropy, not --loss {setup.loss}"
    if why:
        raise InvalidWorkloadError(f"--framework litgpt: {why}", field=field, allowed=allowed)


def _rms_norm(out: Saved, s: Shape, g: Grads) -> None:
    # lit_gpt/rmsnorm.py: mean(x * x) and x * rsqrt(...) keep x and rsqrt in the input's dtype
    out.add("norms", s.c * s.h + s.c)
    if g.base:
        out.add("norms", s.c * s.h)  # x_normed, for the weight's gradient (weight * x_normed)


def _qkv_input(out: Saved, s: Shape, g: Grads, q: int, kv: int) -> None:
    """The fused ``attn`` linear's input and LoRAQKVLinear's tensors (one adapter for q, k and v)."""
    enabled = [grp for grp in _QKV if g.adapted(grp)]
    a = g.adapter
    # the input itself: kept by the base weight, a 4-bit base, or lora_A when no dropout stands between
    if g.base or g.inputs_kept or (enabled and not g.lora_dropout and a == s.c):
        out.add("attention/input", s.c * s.h)
    if not enabled:
        return
    if g.lora_dropout:
        out.add("lora", (1 + a) * s.h)  # nn.Dropout: bool mask + dropped copy, read by F.linear(x, lora_A)
    elif a != s.c:
        out.add("lora", a * s.h)
    out.add("lora", a * g.lora_r * len(enabled))  # after_A, kept by conv1d
    if len(enabled) < 3:
        widths = {"attention.q": q, "attention.k": kv, "attention.v": kv}
        out.add("lora", a * sum(widths[grp] for grp in enabled))  # zero_pad: index_copy keeps its source


def litgpt_layer_saved(spec: ModelSpec, s: Shape, g: Grads) -> Saved:
    """Bytes per token one LitGPT decoder layer keeps from its forward until its backward."""
    out = Saved()
    c, d = s.c, s.head_dim
    for n in range(spec.norm.per_layer):
        if spec.norm.kind == "layer":
            if n == 1 and spec.parallel_block:  # both norms read the block's input: the second adds mean, rstd
                out.add("norms", 2 * c)
            else:
                _norm(out, spec, s, g, "norms")  # torch.nn.LayerNorm, as in transformers
        else:
            _rms_norm(out, s, g)
    q, kv = s.heads * d, s.kv_heads * d
    _qkv_input(out, s, g, q, kv)
    if s.kv_heads in (s.heads, 1):
        saved_k, saved_v = (q if s.kv_heads == s.heads else kv), q + 2 * kv  # v: a view of the fused output
    else:
        saved_k, saved_v = q, q  # expand + reshape: copies at every query head
    out.add("attention/qkv", c * (q + saved_k + saved_v))
    out.add("attention/output", c * q + 4 * s.heads)  # kernel output + fp32 log-sum-exp
    _linear_input(out, s, g, "attention/o_input", q, ("attention.o",), 1)  # y.reshape's copy
    _mlp(out, spec, s, g)
    return out


def litgpt_lora_modules(spec: ModelSpec, targets: tuple[str, ...]) -> list[LoraModule]:
    """The adapted linears as lit_gpt/lora.py builds them: a fused qkv projection takes its adapters per part
    (LoRAQKVLinear enable_lora = (to_query, to_key, to_value), lora_A r x parts by h, lora_B the enabled widths
    by r), so ``q_proj``, ``k_proj`` and ``v_proj`` name those parts; a module name of the family's fused qkv
    (Falcon's ``query_key_value``) enables all three. Other linears are one module each, as peft names them."""
    outs = {g.name: g.count // g.tensors // g.in_features for g in parameter_groups(spec) if g.kind == "linear"}
    modules: list[LoraModule] = []
    aliases: dict[str, list[str]] = {}
    for m in linear_modules(spec):
        if len(m.groups) > 1 and all(grp in _QKV for grp in m.groups):
            parts = [
                replace(m, name=_PART[grp], groups=(grp,), out_features=outs[grp]) for grp in m.groups if grp in outs
            ]
            modules += parts
            aliases[m.name] = [p.name for p in parts]
        else:
            modules.append(m)
    names = sorted({m.name for m in modules} | set(aliases))
    if "all-linear" in targets:
        return modules
    unknown = [t for t in targets if t not in names]
    if unknown or not targets:
        raise InvalidWorkloadError(
            f"lora_targets: {shown(', '.join(unknown), quote=False) or 'none given'} not in {spec.name} as LitGPT "
            f"adapts it; allowed: {', '.join(names)}, all-linear",
            field="lora_targets",
            allowed=", ".join(names),
        )
    wanted = {name for t in targets for name in aliases.get(t, [t])}
    return [m for m in modules if m.name in wanted]


# Lightning 71aed751 plugins/precision/bitsandbytes.py BitsandbytesPrecision.init_context: under fabric.init_module
# every torch.nn.Linear is built as the quantized class (_ClassReplacementContextManager), lit-gpt's lm_head
# (LoRALinear.linear) included; _Linear4bit._quantize_weight quantizes ``weight.to(dtype=torch.half)``.
SRC_BNB = (
    "Lightning 71aed751 plugins/precision/bitsandbytes.py (_ClassReplacementContextManager over torch.nn.Linear; "
    "_Linear4bit._quantize_weight: quantize_4bit(weight.to(torch.half))), bitsandbytes 0.41.1 MatMul4Bit"
)


def quantizes_head(setup: TrainSetup) -> bool:
    """LitGPT under BitsandbytesPrecision quantizes the output head too (transformers' bnb path skips it)."""
    return runs_litgpt_code(setup) and setup.peft.method in (PeftMethod.QLORA, PeftMethod.LORA_8BIT)


def litgpt_dequantized(spec: ModelSpec, setup: TrainSetup, compute: int) -> Term:
    """The 4-bit matmul's transient: ``F.dequantize_4bit(B, state)`` in the quantized weight's original dtype
    (fp16: Lightning quantized ``weight.to(torch.half)``), then ``.to(A.dtype)``, a second copy in the compute
    dtype unless that is fp16; the largest quantized weight, the head included."""
    quantized = [g for g in parameter_groups(spec) if g.kind == "linear" and (in_layer(g) or g.category == "head")]
    largest = max(g.count // g.tensors for g in quantized)
    cast = 0 if setup.precision.recipe == Precision.FP16_MIXED else compute
    return Term(
        name="qlora/dequantized_weight",
        bytes=largest * (2 + cast),
        formula=f"largest quantized weight (head included) {largest:,} x (2 B dequantized fp16 + {cast} B cast to "
        "the compute dtype)",
        source=SRC_BNB,
    )


# Lightning 2.1.0 fabric/wrappers.py _FabricModule.forward: the output goes through precision.convert_output after
# the forward context; HalfPrecision (bf16-true, 16-true), BitsandbytesPrecision and FSDPPrecision
# (plugins/precision/half.py, bitsandbytes.py, fsdp.py convert_output) all cast floating outputs to
# torch.get_default_dtype(), float32 outside the forward context. lit-gpt 8641822 finetune/lora.py train keeps that
# list in ``logits`` (``logits = model(input_ids, lm_head_chunk_size=128)``, never deleted): it lives until the
# next step's forward has returned and its cast is done, so every phase holds one list, and the forward's end,
# while the cast runs, the previous list, the new 16-bit chunks and their fp32 copies at once. utils.py
# chunked_cross_entropy runs F.cross_entropy on each fp32 chunk: log_softmax saves its fp32 result. Autograd runs
# every chunk's nll and log-softmax backward (newer nodes) before the casts' and the head's: each chunk's fp32
# gradient replaces its released saved log-softmax, so the loss backward adds one chunk's two fp32 gradients.
# Traced: LitGPT's own step at 8641822 on Llama-2-7B under FakeTensorMode (bench/litgpt_step.py).
SRC_FABRIC_OUTPUT = (
    "Lightning 2.1.0 fabric/wrappers.py _FabricModule.forward -> plugins/precision/half.py HalfPrecision."
    "convert_output (bitsandbytes.py, fsdp.py alike): outputs cast to torch.get_default_dtype(), fp32; lit-gpt "
    "8641822 finetune/lora.py train keeps ``logits``; utils.py chunked_cross_entropy"
)


def litgpt_loss_rules(vocab: int, c: int, chunk: int, flight: float) -> tuple[Rule, Rule, Rule, Rule]:
    """(the loop's fp32 logits, kept in every phase; the fp32 log-softmax, saved; the loss backward's extra; the
    forward's end's extra) for LitGPT's chunked head and loss under Fabric, ``c`` the head's output bytes.
    ``chunk`` is lm_head_chunk_size positions of every sequence (``x.split(chunk, dim=1)``): b x chunk tokens a
    chunk, a bound when the sequence is shorter. At the forward's end the cast's fp32 copies stand where the
    log-softmax will be (the same bytes), beside the previous list (kept) and the new 16-bit chunks."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    kept = Rule(
        name="loss/held_logits",
        coef=4 * vocab,
        var=TOKENS,
        formula=lambda v: f"the training loop's fp32 logit chunks (Fabric's convert_output): T {v.T} x V {vocab} x 4 B",
        source=SRC_FABRIC_OUTPUT,
    )
    saved = Rule(
        name="activations/loss",
        coef=4 * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"fp32 log-softmax of every chunk (at the forward's end, the cast's fp32 copies): T {v.T} "
        f"x V {vocab} x 4 B{many}",
        source=SRC_FABRIC_OUTPUT,
    )
    backward = Rule(
        name="loss/backward",
        coef=8 * vocab * chunk,
        var=BATCH,
        formula=lambda v: f"one chunk's nll and log-softmax fp32 gradients: 2 x b {v.b} x {chunk} positions x "
        f"V {vocab} x 4 B",
        source=SRC_FABRIC_OUTPUT,
        tensors=2,
    )
    cast = c if c != 4 else 0  # an fp32 head's output is the list itself: ``.to(float32)`` returns it
    forward = Rule(
        name="loss/logits",
        coef=cast * vocab,
        var=TOKENS,
        formula=lambda v: f"the head's {c}-B chunks while Fabric casts them, beside the previous step's fp32 list: "
        f"T {v.T} x V {vocab} x {cast} B",
        source=SRC_FABRIC_OUTPUT,
    )
    return kept, saved, backward, forward
