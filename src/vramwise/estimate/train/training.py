"""Training memory per GPU in accurate mode: every term of one pipeline stage, by phase.

Persistent: weights (by category, in the recipe's storage; QLoRA's base in NF4), LoRA adapters, the fp32
master copy, optimizer states, gradients when they outlive a backward (accumulation, ZeRO-3 partitions,
DDP buckets), the CUDA context. Phases, each with what is live only then:
  forward end       activations of every in-flight micro-batch, the saved loss, autocast's weight copies,
                    ZeRO-3/FSDP gathered parameters;
  backward (loss)   the same plus the loss backward's fp32 gradients (last stage);
  backward (recompute)  with full recompute: the checkpoints plus one layer rebuilt;
  backward (layer), backward (head)  FSDP: units gathered in backward, the root unit's head gradient;
  backward end      all gradients (unless persistent) plus reduce buckets;
  optimizer step    gradients plus the step's transients (foreach copies, fp32 gradient copies).
The peak is the largest phase; ``estimate_stages`` returns every stage, ``estimate_training`` the worst.
Model states come from ``states.py``, ZeRO-3/FSDP's gathered parameters from ``sharded.py``, the saved
tensors per layer from ``activations.py``, the loss region from ``loss.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from vramwise.errors import InvalidWorkloadError, NeedsArchitectureError
from vramwise.estimate.allocator_model import AllocatorConfig
from vramwise.estimate.cuda_context import context_term
from vramwise.estimate.logits import head_words
from vramwise.estimate.overheads import is_tensor
from vramwise.estimate.plan import BATCH_SEQ_SEQ, TOKENS, AllocatorModel, Plan, Rule, Transients, Vars, constant
from vramwise.estimate.positions import training_positions
from vramwise.estimate.ssm_state import refuse_training
from vramwise.estimate.term import Estimate, PhaseKind, Term
from vramwise.estimate.train import backward_workspace, encoder, peft_extras, seq2seq
from vramwise.estimate.train.activations import Grads, layer_saved
from vramwise.estimate.train.allocation import REPLAY_NOTE, StepTensors, parameter_tensors, spread
from vramwise.estimate.train.comms import comms_notes, nccl_terms
from vramwise.estimate.train.fsdp_streams import stream_pools
from vramwise.estimate.train.knobs import (
    COMPILE_ADAPTERS_NOTE,
    SRC_OP_SAC,
    check_knobs,
    float8_casts,
    op_sac_saved,
)
from vramwise.estimate.train.layout import (
    Stage,
    check_layout,
    in_layer,
    padded_vocab,
    stage_share,
    stages,
)
from vramwise.estimate.train.litgpt_code import (
    keeps_4bit_inputs,
    litgpt_dequantized,
    litgpt_lora_modules,
    litgpt_loss_rules,
    runs_litgpt_code,
)
from vramwise.estimate.train.loading import loading_term
from vramwise.estimate.train.lora import LoraModule, adapter_bytes, kbit_prepared, lora_targets
from vramwise.estimate.train.loss import (
    LossRules,
    classifier_loss_rules,
    implementation_rules,
    liger_chunk,
    torchtitan_upcast,
)
from vramwise.estimate.train.peft_methods import LORA_LIKE, check_method, check_setup, ia3_modules
from vramwise.estimate.train.quantized import training_base
from vramwise.estimate.train.recipe import Recipe, recipe_for
from vramwise.estimate.train.sharded import forward_units, gathered, head_grads, head_unit, outer_units
from vramwise.estimate.train.states import ModelStates, StatesSetup, fsdp2_fp32_params, model_states
from vramwise.estimate.train.zero3 import persistent_params
from vramwise.estimate.vision import vision_training_notes
from vramwise.estimate.weights import buffers, training_checkpoint_note
from vramwise.formats import get_format, kept_note
from vramwise.spec.load import BareModel, Model
from vramwise.spec.model import ModelSpec
from vramwise.spec.params import parameter_groups
from vramwise.spec.traits import HeadKind
from vramwise.units import MIB
from vramwise.workload import AttentionImpl, FsdpMode, LossImpl, Optimizer, PeftMethod, Recompute, TrainSetup
from vramwise.workload.options import Framework, KernelImpl, ZeroGrad


def _in_flight(stage: Stage, setup: TrainSetup) -> float:
    """Micro-batches whose activations a stage holds at once under 1F1B (interleaved: in stage-layer units)."""
    p, v, m, k = setup.parallel.pp, setup.parallel.interleave, setup.grad_accum, stage.index
    if p == 1:
        return 1.0
    if v == 1:
        return float(min(p - k, m))
    # Megatron's interleaved schedule: (p - k - 1)·2 + (v - 1)·p warm-up chunks, plus one, of L/(p·v) layers
    return min(((p - k - 1) * 2 + (v - 1) * p + 1) / v, float(m))


def _layer_grads(spec: ModelSpec, setup: TrainSetup, lora: list[LoraModule]) -> Grads:
    method = setup.peft.method
    return Grads(
        base=not setup.peft.adapters,
        lora=tuple(m for m in lora if m.place == "layers"),
        lora_r=setup.peft.lora_r,
        lora_dropout=setup.peft.lora_dropout > 0,
        adapter=adapter_bytes(setup.peft),
        inputs_kept=setup.peft.method == PeftMethod.LORA_8BIT or keeps_4bit_inputs(setup),
        dora=method == PeftMethod.DORA,
        ia3=tuple(ia3_modules(spec, setup.peft.lora_targets)) if method == PeftMethod.IA3 else (),
    )


@dataclass(frozen=True, kw_only=True)
class _LayerQuery:
    """What the saved bytes per token of a stage's layers depend on: the key of ``_saved_per_token``'s cache."""

    stage: Stage
    c: int
    grads: Grads
    attention: AttentionImpl
    recompute: Recompute
    seq: int  # only eager attention's s² depends on it; 0 otherwise, so sweeps over seq hit the cache
    tp: int
    sp: bool
    amp: bool
    peft: bool
    freeze_layers: int
    every: int = 0  # layer-sac: every N-th layer of the stage is checkpointed (0 otherwise)
    fused_norm: bool = False
    fused_mlp: bool = False
    compiled: bool = False
    litgpt: bool = False  # LitGPT's own model code (litgpt_code.py), not transformers'
    softmax_input: int = 0  # torch < 1.11: bytes per score of eager softmax's input, kept for its backward
    kv_to_heads: bool = False  # torchtune's attention copies k and v to every query head (TORCHTUNE_KV_COPY)
    rope_gather: bool = False  # torchtune's rotary embedding gathers its cache by input_pos (TORCHTUNE_ROPE_GATHER)


def _checkpointed(q: _LayerQuery, recording: list[int]) -> set[int]:
    """The recording layers kept as a checkpoint (their input) rather than with every saved tensor: all of them
    under full and op-sac; under layer-sac torchtitan's rule (llama3/infra/parallelize.py
    _apply_ac_to_transformer_block: the k-th block wrapped, k from 1, is checkpointed when k % N == 0)."""
    if q.recompute in (Recompute.FULL, Recompute.OP_SAC):
        return set(recording)
    if q.recompute == Recompute.LAYER_SAC:
        return {i for k, i in enumerate(q.stage.layers, start=1) if k % q.every == 0 and i in recording}
    return set()


@functools.lru_cache(maxsize=4096)
def _saved_per_token(
    spec: ModelSpec, q: _LayerQuery
) -> tuple[int, tuple[tuple[str, float], ...], float, int, tuple[float, ...]]:
    """(layers that record, per-token bytes by name summed over those not checkpointed, the largest single
    layer's per-token bytes, how many are checkpointed, the saved tensors of one layer not checkpointed).

    Layers differ only in whether their MLP is a mixture of experts: each kind is computed once.
    """
    recording = [i for i in q.stage.layers if q.peft or i >= q.freeze_layers]
    ckpt = _checkpointed(q, recording)
    moe_layers = set(spec.moe.moe_layers) if spec.moe else set()
    counts: dict[bool, int] = {}
    first: dict[bool, int] = {}
    for i in recording:
        kind = i in moe_layers
        first.setdefault(kind, i)
        if i not in ckpt:
            counts[kind] = counts.get(kind, 0) + 1
    kinds = {
        kind: layer_saved(
            spec,
            layer=first[kind],
            c=q.c,
            grads=q.grads,
            attention=q.attention,
            recompute=q.recompute,
            seq=q.seq,
            tp=q.tp,
            sp=q.sp,
            amp=q.amp,
            fused_norm=q.fused_norm,
            fused_mlp=q.fused_mlp,
            compiled=q.compiled,
            litgpt=q.litgpt,
            softmax_input=q.softmax_input,
            kv_to_heads=q.kv_to_heads,
            rope_gather=q.rope_gather,
        )
        for kind in first
    }
    names: dict[str, float] = {}
    for kind, n in counts.items():
        for k, v in kinds[kind].items.items():
            names[k] = names.get(k, 0) + v * n
    largest = max((saved.total for saved in kinds.values()), default=0)
    # the allocator replay's tensors of a layer not checkpointed: the most common kind's, scaled to their mean
    pieces: tuple[float, ...] = ()
    if counts:
        common = max(counts, key=lambda k: counts[k])
        mean = sum(names.values()) / sum(counts.values())
        scale = mean / kinds[common].total if kinds[common].total else 0.0
        pieces = tuple(p * scale for p in kinds[common].pieces)
    return len(recording), tuple(names.items()), largest, len(ckpt), pieces


@dataclass(frozen=True, kw_only=True)
class _PerLayer:
    """One layer's saved tensors as the allocator sees them: bytes per token of each (the stage's total spread
    over its layers), how many of the activation rules are these, and a recomputed layer's rebuilt bytes."""

    saved: tuple[float, ...]
    rules: int
    rebuilt: float


def _check_torch_release(spec: ModelSpec, setup: TrainSetup) -> None:
    """torch < 1.11 is modelled where its one difference read so far (softmax keeps its input) is all there is:
    the loss's log_softmax keeps its input too (LogSoftmaxBackward0 ``self_``, the same 1.10.1 header), which over
    a vocabulary is the whole fp32 logits; an encoder-decoder's attention, a vision tower's and an MoE router's
    softmax are not built by ``_scores``: all refused. A classifier's log_softmax input is b x num_labels
    (sequence) or b·s x num_labels (token) fp32, said in a note (``_approximation_notes``)."""
    if not setup.impl.softmax_keeps_input:
        return
    what = (
        "an encoder-decoder's attention" if spec.encoder_decoder
        else "a vision tower's attention" if spec.vision
        else "an MoE router's softmax" if spec.moe
        else f"a {spec.head} head's log_softmax (it keeps the logits)"
        if spec.head in (HeadKind.CAUSAL_LM, HeadKind.MASKED_LM)
        else None
    )
    if what:
        raise InvalidWorkloadError(
            f"torch_version {setup.impl.torch_version}: {what} is not modelled before torch 1.11, whose autograd "
            "keeps a softmax's input",
            field="torch_version",
            allowed="--torch-version 1.11 or later, or a dense text model with a classification head",
        )


def _softmax_input(spec: ModelSpec, setup: TrainSetup, recipe: Recipe) -> int:
    """Bytes per score element of eager softmax's input that torch < 1.11 keeps for the backward
    (workload/train.py ImplConfig.softmax_keeps_input: SoftmaxBackward0 saves ``self_``); 0 from 1.11, or without
    eager attention's s² softmax (SDPA and flash kernels save no scores).

    The saved input is the tensor the autograd node received: in fp32, the fp32 scores; under CUDA autocast, the
    fp32 tensor autocast's fp32 policy hands ``softmax`` (its cast, or the input itself when fp32 already: BERT's
    fp16 scores plus the fp32 extended mask promote to fp32, transformers 4.15 modeling_bert.py
    BertSelfAttention.forward and modeling_utils.py get_extended_attention_mask's ``.to(dtype=self.dtype)``); a
    family whose softmax runs in the compute dtype, that dtype. A 16-bit recipe without autocast whose family
    asks ``softmax(..., dtype=torch.float32)`` goes through at::softmax's conversion, which this model has not read
    at torch 1.10: refused in one line."""
    if not setup.impl.softmax_keeps_input or setup.attention != AttentionImpl.EAGER or runs_litgpt_code(setup):
        return 0
    if recipe.autocast_cache or recipe.compute == 4:
        return 4
    if spec.traits.softmax_in_compute_dtype:
        return recipe.compute
    raise InvalidWorkloadError(
        f"torch_version {setup.impl.torch_version}: the saved input of a softmax upcast from {recipe.name} "
        "activations is not modelled before torch 1.11",
        field="torch_version",
        allowed="--torch-version 1.11 or later, or precision fp32, amp, amp-fp16",
    )


def _activations(
    spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, lora: list[LoraModule], flight: float
) -> tuple[list[Rule], float, _PerLayer]:
    """Rules for what is saved until backward on this stage, the largest single layer's bytes per token, and
    the per-layer tensors the allocator replay allocates."""
    c = recipe.compute
    _check_torch_release(spec, setup)
    if spec.encoder_decoder is not None:  # both stacks, per sequence (estimate/train/seq2seq.py)
        return seq2seq.activation_rules(spec, setup, c, lora), 0.0, _PerLayer(saved=(), rules=0, rebuilt=0)
    query = _LayerQuery(
        stage=stage,
        c=c,
        grads=_layer_grads(spec, setup, lora),
        attention=setup.attention,
        recompute=setup.recompute,
        seq=_run_seq(setup) if setup.attention == AttentionImpl.EAGER else 0,
        tp=setup.parallel.tp,
        sp=setup.parallel.sp,
        amp=recipe.autocast_cache,
        peft=setup.peft.adapters and not peft_extras.head_only(lora),
        freeze_layers=spec.num_layers if peft_extras.head_only(lora) else setup.peft.freeze_layers,
        every=setup.recompute_every if setup.recompute == Recompute.LAYER_SAC else 0,
        fused_norm=setup.impl.norm_impl == KernelImpl.FUSED,
        fused_mlp=setup.impl.mlp_impl == KernelImpl.FUSED,
        compiled=setup.impl.compile and not setup.peft.adapters,  # adapters: eager (knobs.COMPILE_ADAPTERS_NOTE)
        litgpt=runs_litgpt_code(setup),
        softmax_input=_softmax_input(spec, setup, recipe),
        kv_to_heads=setup.framework == Framework.TORCHTUNE,
        rope_gather=setup.impl.packed and not setup.impl.compile,  # knobs._check_packed: torchtune's code only
    )
    recording, per_token, per_layer_max, ckpts, pieces = _saved_per_token(spec, query)
    rules: list[Rule] = []
    n = len(stage.layers)
    saved: tuple[float, ...] = ()
    if ckpts:
        rules.append(_checkpoints(spec, setup, c, ckpts, flight))
        saved += (rules[-1].coef / n,)
    if recording > ckpts:
        rules += [_saved(name, per, recording - ckpts, flight) for name, per in per_token]
        saved += tuple(p * flight * (recording - ckpts) / n for p in pieces)
    # a checkpointed layer is rebuilt in its backward (full, op-sac, layer-sac): the largest layer's saved tensors
    per_layer = _PerLayer(saved=saved, rules=len(rules), rebuilt=per_layer_max if ckpts else 0)
    if setup.peft.method == PeftMethod.PREFIX_TUNING and recording:
        sdpa = setup.attention == AttentionImpl.SDPA
        rules += peft_extras.prefix_rules(spec, setup.peft.num_virtual_tokens, recording, c, flight, sdpa=sdpa)
    if setup.impl.activation_offload and rules:
        rules = [_offloaded(rules, per_layer_max, c * spec.hidden_size if ckpts == recording else 0)]
        per_layer = _PerLayer(saved=(), rules=0, rebuilt=0)  # one layer in flight: a tensor the forward holds
    rules += _outside_layers(spec, stage, setup, recipe, flight, head_only=peft_extras.head_only(lora))
    dora = setup.peft.method == PeftMethod.DORA
    if dora and setup.peft.lora_dropout > 0 and recording and setup.recompute != Recompute.FULL:
        share = len(stage.layers) / spec.num_layers
        copies = peft_extras.dora_dropout_weights(lora, c, share)
        rules += [copies] if copies is not None else []
    rules += peft_extras.outer_lora_rules(spec, stage, setup.peft.lora_r, recipe.compute, lora, flight, dora=dora)
    return rules, per_layer_max, per_layer


# torchtune commit 05cda5e9, training/_activation_offloading.py OffloadActivations: every saved tensor of at least
# min_offload_size (1,024 B) that is not a parameter is copied to pinned host memory in forward; with streams the
# forward stash keeps the last max_fwd_stash_size (5) alive until their copies finish, and backward brings tensors
# back one autograd node at a time. The recipes run only the model under it (the loss stays on the GPU) and opt
# the output projection out (NoOpManager). On the GPU: at most one layer's saved tensors at a time.
SRC_OFFLOAD = "torchtune OffloadActivations (training/_activation_offloading.py): saved tensors to pinned host memory"


def _offloaded(rules: list[Rule], largest_layer: float, checkpoint: int) -> Rule:
    """The layers' saved tensors once offloaded: only the layer in flight stays (its checkpoint under full
    recompute, whose rebuilt layer is the recompute phase's)."""
    per = checkpoint or largest_layer
    total = sum(r.coef for r in rules)
    return Rule(
        name="activations/offload_in_flight",
        coef=per,
        var=TOKENS,
        formula=lambda v: f"one layer's saved tensors on the GPU: {per:,.1f} B/token x T {v.T} (the layers' "
        f"{total:,.0f} B/token go to pinned host memory)",
        source=SRC_OFFLOAD,
    )


def _checkpoints(spec: ModelSpec, setup: TrainSetup, c: int, ckpts: int, flight: float) -> Rule:
    """What the checkpointed layers keep: their input (full, layer-sac), plus op-sac's saved op outputs."""
    flight_f = f" x {flight:g} micro-batches in flight" if flight != 1 else ""
    rep = setup.parallel.tp if setup.parallel.sp else 1
    h = spec.hidden_size
    if setup.recompute == Recompute.OP_SAC:
        per, what = op_sac_saved(spec, c, setup.parallel.tp, rep)
        return Rule(
            name="activations/checkpoints",
            coef=ckpts * per * flight,
            var=TOKENS,
            formula=lambda v: f"{ckpts} layers x {per:,.0f} B/token ({what}) x T {v.T}{flight_f}",
            source=SRC_OP_SAC,
        )
    which = "every layer" if setup.recompute == Recompute.FULL else f"every {setup.recompute_every}th layer"
    return Rule(
        name="activations/checkpoints",
        coef=ckpts * c * h / rep * flight,
        var=TOKENS,
        formula=lambda v: f"{ckpts} layers x layer input T {v.T} x h {h} x {c} B{flight_f}",
        source=f"recompute {setup.recompute} ({which}): a checkpointed layer keeps only its input "
        "(torch.utils.checkpoint)",
    )


def _saved(name: str, per_token: float, recording: int, flight: float) -> Rule:
    """What the recording layers save of one kind (``per_token``: bytes per token summed over the layers)."""
    many = f" x {flight:g} micro-batches in flight" if flight != 1 else ""
    return Rule(
        name=f"activations/{name}",
        coef=per_token * flight,
        var=TOKENS,
        formula=lambda v: f"{per_token / recording:,.1f} B/token/layer x {recording} layers x T {v.T}{many}",
        source="saved tensors of the transformers layer (estimate/train/activations.py)",
    )


@functools.lru_cache(maxsize=1024)
def _any_sliding(spec: ModelSpec, layers: tuple[int, ...]) -> bool:
    return any(spec.layer_attention(i) == "sliding" for i in layers)


def _outside_layers(
    spec: ModelSpec, stage: Stage, setup: TrainSetup, recipe: Recipe, flight: float, *, head_only: bool = False
) -> list[Rule]:
    c, h, out = recipe.compute, spec.hidden_size, []
    many = f" x {flight:g} micro-batches in flight" if flight != 1 else ""
    if spec.traits.rotary:
        d = spec.attention.head_dim
        out.append(
            Rule(
                name="activations/rotary",
                coef=2 * d * c * flight,
                var=TOKENS,
                formula=lambda v: f"cos and sin: 2 x T {v.T} x head_dim {d} x {c} B{many}",
                source="transformers rotary embedding, shared by every layer",
            )
        )
    sliding = _any_sliding(spec, stage.layers)
    if sliding and setup.attention == AttentionImpl.SDPA:
        # A sliding window rules out is_causal: transformers builds a (b, 1, s, s) mask that sdpa keeps
        out.append(
            Rule(
                name="activations/attention_mask",
                coef=c * flight,
                var=BATCH_SEQ_SEQ,
                formula=lambda v: f"sliding-window mask b {v.b} x s {v.s} x s {v.s} x {c} B{many}",
                source="transformers masking_utils for sdpa; flash-attention takes the window as an argument",
            )
        )
    if stage.first:
        # int64 ids and labels; seq is a multiple of cp, so b·s = cp·T
        out.append(
            Rule(
                name="activations/inputs",
                coef=16 * setup.parallel.cp * flight,
                var=TOKENS,
                formula=lambda v: f"input ids and labels: 2 x b {v.b} x s {v.s} x 8 B{many}",
                source="int64 token ids",
            )
        )
        if spec.embedding.norm:
            out.append(encoder.embedding_norm_rule(spec, c, recipe.autocast_cache, flight))
        if spec.dropout:
            out.append(
                Rule(
                    name="activations/embedding_dropout",
                    coef=h * flight,
                    var=TOKENS,
                    formula=lambda v: f"1-byte mask: T {v.T} x h {h}{many}",
                    source="dropout after the embeddings",
                )
            )
    if stage.last and encoder.has_encoder_head(spec):
        out += encoder.encoder_head_rules(spec, c, recipe.autocast_cache, flight)
    if stage.last and spec.norm.final and not head_only:
        full = not setup.peft.adapters
        head_trains = full and not (spec.tied_embeddings and setup.peft.freeze_layers)  # a tied head freezes too
        fp32 = spec.traits.norm_weight_fp32  # fp32 weight multiply
        per = c * h + 2 * c if spec.norm.kind == "layer" else 4 * h + 4 + ((4 if fp32 else c) * h if full else 0)
        if setup.impl.norm_impl == KernelImpl.FUSED:
            per = c * h + 4  # Liger's RMSNorm: its input and the fp32 rstd
        # lm_head's input, for the head's gradient: Liger computes that gradient in forward and keeps none; Cut
        # Cross Entropy saves its input e whether or not the head trains
        keeps_input = (head_trains and setup.loss != LossImpl.LIGER) or setup.loss == LossImpl.CCE
        per += c * h if keeps_input else 0
        out.append(
            Rule(
                name="activations/final_norm",
                coef=per * flight,
                var=TOKENS,
                formula=lambda v: f"{per:,} B/token x T {v.T}{many}",
                source="final norm and lm_head input (estimate/train/activations.py rules)",
            )
        )
    return out


def _head_trains(spec: ModelSpec, setup: TrainSetup) -> bool:
    return not setup.peft.adapters and not (spec.tied_embeddings and setup.peft.freeze_layers)


# peft 51c2ff6 method_comparison/MetaMathQA/run.py train: ``outputs = model(**batch, num_items_in_batch=...)``;
# ``loss = outputs.loss``; backward, step; ``outputs`` is rebound only when the next step's forward returns.
# transformers' causal LMs return the logits with the loss (LlamaForCausalLM.forward: CausalLMOutputWithPast(loss,
# logits)), the lm_head's output in the compute dtype, which nothing else holds (ForCausalLMLoss upcasts a copy):
# the loop keeps them through backward and the next forward. HF Trainer's compute_loss returns the loss alone.
KEPT_LOGITS_SOURCE = (
    "peft 51c2ff6 method_comparison/MetaMathQA/run.py train (outputs = model(**batch)); transformers "
    "LlamaForCausalLM.forward returns CausalLMOutputWithPast(loss, logits)"
)
_KEEPS_LOGITS = ("full", "compute-dtype")  # losses computed on the whole logits the model returns


def _kept_logits(spec: ModelSpec, setup: TrainSetup, vocab: int, c: int) -> Rule:
    """``--keep-logits``: the model's output logits a plain loop keeps in ``outputs`` (every phase of the step); the
    setups whose model returns no whole logits, or whose loop is another's, are refused in one line."""
    why = ""
    if spec.head is not HeadKind.CAUSAL_LM or spec.encoder_decoder is not None:
        why = "a causal LM's logits"
    elif runs_litgpt_code(setup):
        why = "transformers' models (LitGPT's loop keeps its own fp32 logits: loss/held_logits)"
    elif setup.loss not in _KEEPS_LOGITS:
        why = "a loss on the whole logits the model returns (--loss full or compute-dtype)"
    elif setup.parallel.tp > 1:
        why = "one GPU's whole vocabulary (tp 1)"
    if why:
        raise InvalidWorkloadError(
            f"--keep-logits is modelled for {why}", field="keep_logits", allowed="--keep-logits without it"
        )
    return Rule(
        name="loss/held_logits",
        coef=c * vocab,
        var=TOKENS,
        formula=lambda v: f"the logits the loop keeps in its outputs: T {v.T} x V {vocab} x {c} B",
        source=KEPT_LOGITS_SOURCE,
    )


def _loss(spec: ModelSpec, setup: TrainSetup, recipe: Recipe, flight: float) -> LossRules:
    rules = _loss_region(spec, setup, recipe, flight)
    if setup.impl.keep_logits:
        kept = _kept_logits(spec, setup, spec.vocab_size, recipe.compute)
        return replace(rules, kept=(*rules.kept, kept))
    return rules


def _loss_region(spec: ModelSpec, setup: TrainSetup, recipe: Recipe, flight: float) -> LossRules:
    if spec.encoder_decoder is not None:  # the target's logits (estimate/train/seq2seq.py)
        saved, temp = seq2seq.loss_rules(spec, setup, recipe.compute)
        return LossRules(saved=(saved,), backward=(temp,))
    if spec.head is HeadKind.MASKED_LM:  # an encoder's masked LM (estimate/train/encoder.py)
        saved, temp = encoder.mlm_loss_rules(spec.vocab_size, recipe.compute, recipe.autocast_cache, flight)
        return LossRules(saved=(saved,), backward=(temp,))
    if spec.head is not HeadKind.CAUSAL_LM:  # a classifier (_check refuses every other head)
        per_sequence = spec.head is HeadKind.SEQUENCE_CLASSIFICATION
        saved, temp = classifier_loss_rules(labels=spec.num_labels, per_sequence=per_sequence, flight=flight)
        return LossRules(saved=(saved,), backward=(temp,))
    if runs_litgpt_code(setup) and setup.loss == "compute-dtype":  # F.cross_entropy on Fabric's fp32 output
        kept, saved, temp, cast = litgpt_loss_rules(spec.vocab_size, recipe.compute, setup.loss_chunk, flight)
        return LossRules(saved=(saved,), backward=(temp,), kept=(kept,), forward=(cast,) if cast.coef else ())
    # vocab-parallel cross entropy: each rank holds its share of the padded vocabulary, as the head does
    tp = setup.parallel.tp
    vocab = spec.vocab_size if tp == 1 else padded_vocab(spec.vocab_size, tp) // tp
    head = spec.vocab_size * (spec.embedding.proj_dim or spec.hidden_size) * recipe.weight
    rules = implementation_rules(
        vocab=vocab,
        h=spec.hidden_size,
        c=recipe.compute,
        loss=setup.loss,
        flight=flight,
        softcap=spec.final_logit_softcap,
        head=head if _head_trains(spec, setup) else 0,
        amp=recipe.autocast_cache,
        compiled=setup.impl.compile,
    )
    if setup.framework == Framework.TORCHTITAN and setup.loss == "full" and not spec.final_logit_softcap:
        return replace(rules, forward_replayed=torchtitan_upcast(vocab, recipe.compute, flight))
    return rules


def _autocast_cache(spec: ModelSpec, stage: Stage, setup: TrainSetup) -> tuple[Term, Term | None]:
    """Autocast's 16-bit weight copies: those held until their backward, and (with every layer checkpointed) those
    held only until the forward's autocast region exits.

    torch.autocast casts each fp32 leaf weight that requires grad once per region and caches the cast
    (aten/src/ATen/autocast_mode.cpp ``cached_cast``); leaving the outermost region clears the cache
    (``clear_cache`` when the nesting returns to 0; the HF Trainer runs only the forward and the loss inside it).
    Without recompute every matmul saves its copy for backward, so all of them live through backward. With every
    layer checkpointed, a layer's forward saves nothing: its copies are held by the cache alone and freed when the
    forward's region exits; the backward's recompute runs each layer in a region of its own
    (torch/utils/checkpoint.py restores the forward's autocast state), so one layer's copies live then. A frozen
    weight (peft's base) is never cached (``arg.requires_grad()``), so a checkpointed frozen layer keeps none.
    Biases are cached too but no matmul saves them: their (small) copies are not counted.
    """
    layers = head = 0.0
    for g in parameter_groups(spec):
        # tied token embeddings reach a matmul only through an LM head: a classifier's embedding lookup is not
        # autocast (embedding is on no autocast list), so nothing is cast or cached for it
        if g.kind == "linear" or g.category == "head" or (
            spec.tied_embeddings and spec.lm_head and g.name == "embeddings.tokens"
        ):
            n = g.count * stage_share(g, spec, stage, setup.parallel)
            if in_layer(g):
                layers += n
            else:
                head += n
    frozen = setup.peft.freeze_layers if not setup.peft.adapters else 0
    if frozen and stage.layers:
        # a frozen bottom layer's weights are neither cached (no requires_grad) nor saved (nothing below them
        # needs a gradient): its copies are freed as soon as its matmuls ran (the stage's layers taken alike)
        layers *= sum(1 for i in stage.layers if i >= frozen) / len(stage.layers)
    source = (
        "torch.autocast casts fp32 weights per op and caches the casts for the forward (pytorch "
        "aten/src/ATen/autocast_mode.cpp cached_cast: leaf fp32 tensors that require grad)"
    )
    checkpointed = setup.recompute in (Recompute.FULL, Recompute.OP_SAC) and stage.layers
    if not checkpointed:
        n = layers + head
        return Term(
            name="autocast/weight_copies",
            bytes=round(2 * n),
            formula=f"16-bit copy of {n:,.0f} matmul weights x 2 B, kept for their backward",
            source=source,
        ), None
    recording = sum(1 for i in stage.layers if i >= frozen)
    one = layers / recording if recording else 0.0
    kept = head + one
    cached = (layers - one) if not setup.peft.adapters else 0.0
    held = Term(
        name="autocast/weight_copies",
        bytes=round(2 * kept),
        formula=f"16-bit copy of the head's {head:,.0f} and one recomputed layer's {one:,.0f} weights x 2 B",
        source=source + "; checkpointed layers: one layer's, recomputed in its own autocast region",
    )
    forward = Term(
        name="autocast/cached_copies",
        bytes=round(2 * cached),
        formula=f"the other layers' {cached:,.0f} weights x 2 B in autocast's cache until the forward's region exits",
        source=source + "; clear_cache at the region's exit",
    )
    return held, forward


def _persistent(setup: TrainSetup, states: ModelStates, stage: Stage) -> tuple[tuple[Term, ...], Term | None]:
    """The stage's persistent terms, and its gradients when they live only from backward to the step."""
    grads = states.gradients
    # Gradients outlive a backward when they accumulate, or in DeepSpeed ZeRO-3's partition, preallocated
    # once (stage3.py _setup_for_real_optimizer: grad_partitions_flat_buffer). ZeRO-2 allocates its partition
    # during backward and frees it after the step (stage_1_and_2.py copy_grads_in_partition, step); FSDP
    # allocates each sharded gradient at its reduce-scatter: the loss backward sees none of either.
    zero_buffer = setup.parallel.sharding.stage == 3 and setup.parallel.fsdp == FsdpMode.NONE
    # zero_grad(set_to_none=False) (--zero-grad zeros, torch < 2.0's default) zeroes them in place: allocated at the
    # first backward, they stay through every later forward
    zeros = setup.optimizer.zero_grad == ZeroGrad.ZEROS
    grads_persist = grads is not None and (setup.grad_accum > 1 or zero_buffer or zeros)
    kept = (grads,) if grads is not None and grads_persist else ()
    context = context_term(setup.overheads)
    # NCCL's communicator buffers: persistent, outside the allocator (estimate/train/comms.py)
    comms = nccl_terms(setup, pipeline_end=stage.first or stage.last)
    return (*states.persistent, *kept, context, *comms), None if grads_persist else grads


@dataclass(frozen=True, kw_only=True)
class _Forward:
    """Indices of the forward's transients: all of them, those still live in the last layer's backward (the
    activations, autocast's copies, QLoRA's dequantized weight), and the loss backward's extra."""

    held: list[int]
    in_layers: list[int]
    loss_backward: list[int]
    loss_forward: list[int]  # live at the forward's end only (torchtune's logits, Liger's chunk, autocast's cache)
    loss_saved: list[int]  # what the loss saves: released by the loss backward, before any layer's backward
    largest_layer: float  # the largest single layer's saved bytes per token (full recompute rebuilds one)
    gathered_backward: list[Term]  # ZeRO-3/FSDP units gathered during backward
    gathered_end: list[Term]  # what ZeRO-3/FSDP hold gathered at the end of backward
    per_layer: _PerLayer  # the layers' saved tensors, for the allocator replay
    dora_weight: Rule | None = None  # DoRA's rebuilt weight while one module's forward runs
    loss_head: list[int] = field(default_factory=list)  # a chunked head's matmuls' backward (LossRules.head_chunks)
    layer_only: list[int] = field(default_factory=list)  # in_layers without the head's and final norm's tensors
    loss_kept: list[int] = field(default_factory=list)  # the loop's logits: in every phase of the step (LossRules.kept)
    loss_only_forward: list[int] = field(default_factory=list)  # LossRules.forward_replayed (the allocator replay's)
    matmul_only: list[int] = field(default_factory=list)  # live only while a layer's matmul runs (see quiet)


def _forward(
    spec: ModelSpec, setup: TrainSetup, stage: Stage, recipe: Recipe, lora: list[LoraModule], out: Transients
) -> _Forward:
    flight = _in_flight(stage, setup)
    acts, largest_layer, per_layer = _activations(spec, stage, setup, recipe, lora, flight)
    in_layers = out.add(*acts)
    layer_only = [j for j in in_layers if out.rules[j].name not in backward_workspace.HEAD_SAVED]
    held = list(in_layers)
    loss_backward: list[int] = []
    loss_forward: list[int] = []
    loss_saved: list[int] = []
    loss_head: list[int] = []
    loss_kept: list[int] = []
    loss_only_forward: list[int] = []
    if stage.last:
        rules = _loss(spec, setup, recipe, flight)
        loss_saved = out.add(*rules.saved)
        held += loss_saved
        loss_kept = out.add(*rules.kept)
        held += loss_kept
        loss_backward = out.add(*rules.backward)
        loss_only_forward = out.add(*rules.forward_replayed)
        loss_forward = out.add(*rules.forward) + loss_only_forward
        # traced without FSDP or tp; read under FSDP2 full sharding (_head_chunks_sharded); tp splits the vocabulary
        loss_head = out.add(*rules.head_chunks) if _head_chunks_modelled(setup) else []
        if setup.peft.method == PeftMethod.DORA and any(m.place == "head" for m in lora):
            below = not peft_extras.head_only(lora)
            loss_backward += out.add(peft_extras.dora_head_backward(spec.vocab_size, recipe.compute, below))
    if recipe.autocast_cache:
        copies, cached = _autocast_cache(spec, stage, setup)
        autocast = out.add(copies)
        held += autocast
        in_layers += autocast
        layer_only += autocast
        if cached is not None and cached.bytes:
            loss_forward += out.add(cached)  # live at the forward's end only (cleared with the region)
    gathered_fwd, gathered_bwd, gathered_end = gathered(spec, setup, recipe)
    held += out.add(*gathered_fwd)
    if setup.impl.float8:
        casts = out.add(*float8_casts(spec, setup.parallel.tp))
        held += casts
        in_layers += casts
        layer_only += casts
    base = training_base(spec, setup.peft).fmt
    matmul_only: list[int] = []
    if base:
        litgpt = runs_litgpt_code(setup)  # Lightning's bnb: fp16 dequantized + cast, the head quantized too
        dequantized = out.add(litgpt_dequantized(spec, setup, recipe.compute) if litgpt else _dequantized(spec, base))
        held += dequantized
        in_layers += dequantized
        layer_only += dequantized
        matmul_only = [] if litgpt else dequantized  # LitGPT quantizes its head too: its loss moments dequantize
    return _Forward(
        held=held,
        in_layers=in_layers,
        loss_backward=loss_backward,
        loss_forward=loss_forward,
        loss_saved=loss_saved,
        largest_layer=largest_layer,
        gathered_backward=gathered_bwd,
        gathered_end=gathered_end,
        per_layer=per_layer,
        dora_weight=peft_extras.dora_weight_rule(lora) if setup.peft.method == PeftMethod.DORA else None,
        layer_only=layer_only if not peft_extras.head_only(lora) else [],
        loss_head=loss_head,
        loss_kept=loss_kept,
        loss_only_forward=loss_only_forward,
        matmul_only=matmul_only,
    )


def _backward_phases(
    spec: ModelSpec, setup: TrainSetup, stage: Stage, recipe: Recipe, fwd: _Forward, out: Transients
) -> list[tuple[PhaseKind, list[int]]]:
    """The phases while the forward's tensors are still held: forward end, and the moments of backward that
    add to them (the loss backward, a rebuilt layer, FSDP's gathered units and the head's gradients)."""
    # quiet: a quantized base's dequantized weight is a temporary of one layer's matmul (torchao 0.6.1
    # dtypes/nf4tensor.py LinearNF4.forward: F.linear(input, weight.to(input.dtype)); LinearNF4.backward:
    # grad_output @ weight.to(grad_output.dtype); bitsandbytes 95f9af3 autograd/_functions.py MatMul4Bit.backward:
    # torch.matmul(grad_output, F.dequantize_4bit(B, ctx.state)...), only B saved): it is gone at
    # the forward's end and while the loss and an unquantized head run backward. The rebuilt layer's moment
    # (full recompute) keeps it; without recompute no later moment carries it, so these moments keep it then.
    quiet = fwd.held
    if setup.recompute in _RECOMPUTING and fwd.largest_layer:
        quiet = [i for i in fwd.held if i not in fwd.matmul_only]
    phases = [(PhaseKind.FORWARD_END, quiet + fwd.loss_forward)]
    if copy_out := forward_units(spec, setup, recipe):
        # the last layer's copy-out: every earlier layer's activations (this layer's are counted too: a bound by
        # one layer's), the root unit, three layer units
        root = [t for t in fwd.gathered_backward if t.name == "fsdp/root_unit"]
        phases.append((PhaseKind.FORWARD_LAYER, fwd.in_layers + out.add(*root, *copy_out)))
    if fwd.dora_weight is not None:
        phases.append((PhaseKind.FORWARD_DORA, fwd.in_layers + out.add(fwd.dora_weight)))
    if fwd.loss_backward:
        phases.append((PhaseKind.BACKWARD_LOSS, quiet + fwd.loss_backward))
    if fwd.loss_head:  # the loss's nodes ran and released what they saved; the head's chunked matmuls follow
        kept = [i for i in quiet if i not in fwd.loss_saved]
        unit = out.add(*head_unit(spec, setup, recipe))  # FSDP2: a head of its own unit, gathered again (FSDP_CHUNKS)
        phases.append((PhaseKind.BACKWARD_HEAD_CHUNKS, kept + unit + fwd.loss_head))
    rebuilt: list[int] = []
    if setup.recompute in _RECOMPUTING and fwd.largest_layer:
        rebuilt = out.add(
            Rule(
                name="activations/recomputed_layer",
                coef=fwd.largest_layer,
                var=TOKENS,
                formula=lambda v: f"one layer's saved tensors, rebuilt for its backward: T {v.T}",
                source="full recompute re-runs one layer's forward during backward",
            )
        )
        # DoRA's forward runs again in the rebuilt layer: its fp32 weight rebuild joins the rebuilt activations
        again = out.add(fwd.dora_weight) if fwd.dora_weight is not None else []
        if fwd.dora_weight is not None and setup.peft.lora_dropout > 0:  # and, with dropout, its weight copies
            copies = peft_extras.dora_dropout_weights(_lora(spec, setup), recipe.compute, 1 / spec.num_layers)
            again += out.add(copies) if copies is not None else []
        # a layer is rebuilt inside its own backward, after the loss's nodes ran and released what they saved
        # (autograd frees a node's saved tensors once it has run, retain_graph=False)
        kept = [i for i in fwd.held if i not in fwd.loss_saved]
        phases.append((PhaseKind.BACKWARD_RECOMPUTE, kept + rebuilt + again))
    if setup.parallel.fsdp != FsdpMode.NONE and fwd.gathered_backward:
        phases += _fsdp_backward(spec, setup, stage, recipe, fwd, out, rebuilt)
    return phases


def _fsdp_backward(
    spec: ModelSpec,
    setup: TrainSetup,
    stage: Stage,
    recipe: Recipe,
    fwd: _Forward,
    out: Transients,
    rebuilt: list[int],
) -> list[tuple[PhaseKind, list[int]]]:
    """FSDP2's layer and head backward. A layer's backward holds the saved activations (and, with full recompute,
    the rebuilt layer), the root unit, the current and the prefetched layer, the layer's gradients and the head's
    gradient (which waits for the root's reduce-scatter, after every layer). The previous layer's reduce-scatter
    input is still held too, except in the first layer's backward: without recompute that first layer, with every
    activation still saved, is the larger moment (the next one has freed a layer's activations, more than the
    buffer in the traced Llama-2-7B and Llama-3-8B runs); with full recompute the next one is."""
    bwd = out.add(*fwd.gathered_backward)
    trains_head = stage.last and not setup.peft.adapters
    head = out.add(*head_grads(spec, recipe, setup.loss, setup.parallel.tp)) if trains_head else []
    # a head that is its own unit reduce-scatters its gradient right after its backward (sharded.head_unit)
    own = outer_units(spec, setup)
    head_grad = [] if own else [j for j in head if out.rules[j].name == "fsdp/head_grad"]
    head += out.add(*head_unit(spec, setup, recipe)) if head else []
    first = [j for j in bwd if out.rules[j].name != "fsdp/reduce_scatter_input"]
    layer = bwd if rebuilt else first
    phases = [(PhaseKind.BACKWARD_LAYER, fwd.in_layers + rebuilt + layer + head_grad)]
    if head:
        # the head's backward: the last two layer units are already being gathered (prefetch); the layers'
        # gradients and their reduce-scatter buffer come after the head's backward
        units = [j for j in bwd if out.rules[j].name not in ("fsdp/unsharded_grads", "fsdp/reduce_scatter_input")]
        phases.append((PhaseKind.BACKWARD_HEAD, fwd.in_layers + units + head))
    return phases


_RECOMPUTING = (Recompute.FULL, Recompute.OP_SAC, Recompute.LAYER_SAC)

# FSDP_CHUNKS: torchtune's chunked head under FSDP2 full sharding (torch _composable/fsdp _fsdp_param_group.py at
# 012c62d, FSDPParamGroup.pre_forward/post_forward/pre_backward/_prefetch_unshard/post_backward; torchtune 30b8519
# modules/transformer.py TransformerDecoder.chunked_output calls ``self.output`` once per chunk). Each chunk's call
# is one pre_forward/post_forward, so backward runs one pre_backward per chunk: the head's unit is gathered (once
# at a time), and its prefetch targets the post-forward recorded just before the chunk's, the previous chunk of
# the same unit, until the first chunk, whose prefetch gathers the last layer. The chunks' weight gradients meet in
# the unsharded parameter's AccumulateGrad input buffer exactly as on one GPU (loss.py _head_chunks: three
# weight-sized at the second chunk); a chunk's post_backward finds no .grad yet (AccumulateGrad runs after the last
# chunk), reshards and returns. The second chunk's moment: the held activations, the root unit, the head's unit
# and _head_chunks's gradients; no layer unit yet.


def _head_chunks_modelled(setup: TrainSetup) -> bool:
    """Whether the chunked head's backward (LossRules.head_chunks) is modelled: one GPU, or FSDP2 full sharding
    without tp (FSDP_CHUNKS)."""
    return setup.parallel.tp == 1 and setup.parallel.fsdp in (FsdpMode.NONE, FsdpMode.FULL)
_NO_ALL_GATHER = (PhaseKind.FORWARD_END, PhaseKind.BACKWARD_LOSS, PhaseKind.BACKWARD_RECOMPUTE)


def _with_stream_pools(
    phases: list[tuple[PhaseKind, list[int]]], pools: tuple[Term, Term] | None, out: Transients
) -> list[tuple[PhaseKind, list[int]]]:
    """FSDP2's side-stream pools (fsdp_streams.py) beside every phase before backward's end: the reduce-scatter
    pool everywhere (the gradient shards are not counted live there), the all-gather pool where no all-gather
    output is counted."""
    if pools is None:
        return phases
    rs, ag = out.add(pools[0]), out.add(pools[1])
    return [(kind, ix + rs + (ag if kind in _NO_ALL_GATHER else [])) for kind, ix in phases]


# A tied head and embedding are one parameter: autograd sums the head's gradient (from the loss's end of backward)
# and the embedding's (the last node) in the parameter's input buffer before AccumulateGrad runs. torch autograd
# input_buffer.cpp accumulate adds in place only into a buffer holding its last reference; the head's gradient is
# the transpose view mm_mat2_backward returns for ``weight.t()`` (``grad.t().mm(mat1).t()``), whose base shares its
# storage, so the sum is out of place: the head's gradient, the embedding's and their sum at once, two more
# weight-sized tensors than the gradient kept. Under autocast the head's gradient reaches the fp32 parameter through
# the cast's backward (a fresh tensor): the sum is in place, one more. Traced (verify, bf16 and fp32: the backward
# phase's peak) and notes-coord/note-s3.md's open item (the twin under by V x h x 4 there).
SRC_TIED = "torch autograd input_buffer.cpp accumulate, FunctionsManual.cpp mm_mat2_backward; traced (verify)"


# torchtune's builders (models/llama3_2/_component_builders.py llama3_2, models/llama3_1/_component_builders.py
# llama3_1 at 1814feb and 30b8519) make one rotary module shared by every layer, Llama3ScaledRoPE(dim=head_dim,
# max_seq_len=max_seq_len), max_seq_len the model's context (131072 for Llama 3.1 and 3.2, the HF config's
# max_position_embeddings); its rope_init -> build_rope_cache registers ``cache``, torch.stack([cos, sin], -1) of
# the fp32 (max_seq_len, head_dim/2) angles: max_seq_len x head_dim x 4 B, a non-persistent buffer built on the
# device (full_finetune_single_device.py _setup_model: instantiated under ``self._device``; distributed recipes
# call rope_init on every rank after sharding). transformers' rotary embedding keeps only inv_freq.
SRC_TORCHTUNE_ROPE = "torchtune models/llama3_1/_position_embeddings.py Llama3ScaledRoPE.build_rope_cache"


def _torchtune_rope_cache(spec: ModelSpec, setup: TrainSetup) -> list[Term]:
    """torchtune's rotary cache, one per model and GPU (SRC_TORCHTUNE_ROPE)."""
    n = spec.max_position_embeddings
    if setup.framework != Framework.TORCHTUNE or not spec.traits.rotary or not n:
        return []
    d = spec.attention.head_dim
    return [Term(name="buffers/rope_cache", bytes=n * d * 4,
                 formula=f"max_seq_len {n:,} x head_dim {d} (cos, sin of head_dim/2 angles) x 4 B",
                 source=SRC_TORCHTUNE_ROPE)]


def _tied_accumulation(spec: ModelSpec, setup: TrainSetup, stage: Stage, recipe: Recipe) -> Term | None:
    """The tied head's and embedding's gradients summed at the end of backward (one stage holds both, FSDP off)."""
    if not (spec.tied_embeddings and stage.first and stage.last and _head_trains(spec, setup)):
        return None
    if setup.parallel.fsdp != FsdpMode.NONE or setup.parallel.tp > 1 or spec.head is not HeadKind.CAUSAL_LM:
        return None
    n = spec.vocab_size * (spec.embedding.proj_dim or spec.hidden_size)
    extra = 1 if recipe.autocast_cache else 2
    what = "the embedding's, added in place (autocast)" if extra == 1 else "the embedding's and their sum"
    return Term(
        name="gradients/tied_accumulation",
        bytes=extra * n * recipe.weight,
        formula=f"the tied head's gradient beside {what}: {extra} x V {spec.vocab_size} x h {n // spec.vocab_size} x "
        f"{recipe.weight} B",
        source=SRC_TIED,
    )


def _release_phases(
    states: ModelStates, grads: Term | None, gathered_end: list[Term], out: Transients, tied: Term | None = None
) -> list[tuple[PhaseKind, list[int]]]:
    """Backward end and the optimizer step: the activations are gone; ``grads``, the gradients that are not
    persistent, live at backward end, and in the step what of them it still holds (ZeRO-1: its partition);
    ``tied``: a tied head's gradient summed with the embedding's at the end of backward."""
    end = out.add(*states.backward_extra, *gathered_end, *((tied,) if tied else ()))
    step = out.add(*states.step_extra)
    if grads is not None:
        end = out.add(grads) + end
        step = out.add(states.step_gradients or grads) + step
    return [(PhaseKind.BACKWARD_END, end), (PhaseKind.OPTIMIZER_STEP, step)]


def _approximation_notes(spec: ModelSpec, setup: TrainSetup, stage: Stage) -> list[str]:
    """What a knob given cannot change here, and what is counted in its place."""
    notes = [COMPILE_ADAPTERS_NOTE] if setup.impl.compile and setup.peft.adapters else []
    if setup.impl.softmax_keeps_input:
        notes.append(
            f"torch_version {setup.impl.torch_version}: the classifier loss's log_softmax input (fp32, num_labels "
            "per sequence or per token), which autograd also keeps before torch 1.11, is not counted"
        )
    chunked_head = setup.loss == LossImpl.TORCHTUNE_CHUNKED and stage.last and _head_trains(spec, setup)
    if chunked_head and not _head_chunks_modelled(setup):
        notes.append(
            "loss torchtune-chunked under FSDP other than full: the head's chunked matmuls' backward (autograd "
            "summing the chunks' weight gradients, phase backward (head chunks) on one GPU and under FSDP full) is "
            "not modelled there"
        )
    if setup.parallel.fsdp_outer_units and setup.parallel.fsdp != FsdpMode.FULL:
        notes.append(f"fsdp_outer_units not applied: there are no FSDP units with fsdp {setup.parallel.fsdp}")
    elif setup.parallel.fsdp_outer_units and spec.tied_embeddings:
        notes.append(
            "fsdp_outer_units not applied: the head is tied to the embeddings, one parameter, counted in the root unit "
            "(torchtune's tied-embedding configs, llama3_2, set no custom_sharded_layers)"
        )
    par = setup.parallel
    if par.fsdp_over_cp and (par.fsdp == FsdpMode.NONE or par.cp == 1):  # workload/layout.py fsdp_cp: a no-op here
        notes.append(f"fsdp_over_cp not applied: it shards over dp x cp under FSDP, and here fsdp is {par.fsdp}, "
                     f"cp {par.cp}")
    if setup.impl.compile and setup.loss == LossImpl.TORCHTUNE_LINEAR and stage.last:
        notes.append(
            "compile with torchtune-linear: the loss is counted eager (torchtune 0.7 compiles compute_cross_entropy "
            "with the head inside it, apply_compile_strategy; what inductor saves there is not measured: an over-count)"
        )
    return notes


def _stage_notes(spec: ModelSpec, setup: TrainSetup, stage: Stage, recipe: Recipe) -> list[str]:
    sharding = setup.parallel.sharding
    notes = [
        f"precision {recipe.name}: weights {recipe.weight} B, gradients {recipe.grad} B, compute {recipe.compute} B"
    ]
    base = training_base(spec, setup.peft)
    notes += [n for n in (base.note, kept_note(spec) if base.fmt == spec.stored_format else None) if n]
    if base.fmt and spec.moe and get_format(base.fmt).moe_note:
        cast = kbit_prepared(spec, setup.peft)  # peft prepare_model_for_kbit_training: 16-bit params to fp32
        notes.append(
            "fused MoE experts are not nn.Linear: bitsandbytes leaves them unquantized"
            + (" and QLoRA's k-bit preparation casts them to fp32" if cast else "")
            + " (transformers replace_with_bnb_linear)"
        )
    if setup.parallel.pp > 1:
        span = f"layers {stage.layers[0]}-{stage.layers[-1]}"
        notes.append(f"pipeline stage {stage.index} of {setup.parallel.pp}: {span}")
    if setup.optimizer.name in (Optimizer.PAGED_ADAMW, Optimizer.PAGED_ADAMW_8BIT):
        notes.append(
            "paged optimizer: the states of tensors of >= 100,000 elements live in unified memory (bitsandbytes "
            "get_paged, cudaMallocManaged), on the GPU only while it has room and outside torch.cuda.memory_allocated "
            "and reserved: listed as host RAM (optimizer/paged_states), not in the GPU peak"
        )
    if sharding.stage:
        n = sharding.group
        where = f"{n} GPUs (dp x cp: fsdp_over_cp)" if setup.parallel.fsdp_cp > 1 else f"{n} data-parallel GPUs"
        notes.append(f"model states partitioned over {where} (stage {sharding.stage})")
    notes += _approximation_notes(spec, setup, stage)
    if setup.recompute == Recompute.SELECTIVE and setup.attention != AttentionImpl.EAGER:
        notes.append("selective recompute drops the attention scores, which sdpa/flash never keep: no change here")
    if spec.attention.kind == "mla" or spec.moe:
        notes.append("MLA and MoE activations follow the Mixtral/Llama rules and are less tightly traced")
    notes += vision_training_notes(spec, adapters=setup.peft.adapters)
    notes += comms_notes(setup)
    if (checkpoint := training_checkpoint_note(spec)) is not None:
        notes.append(checkpoint)
    if spec.traits.eager_only:
        notes.append(f"{spec.name} has only its own eager attention (BloomAttention): its scores are counted")
    return notes


def _stage_plan(spec: ModelSpec, setup: TrainSetup, stage: Stage) -> Plan:
    """One pipeline stage's plan: its persistent terms, and the transients of each phase."""
    recipe = recipe_for(setup.precision)
    lora = _lora(spec, setup)
    states = model_states(spec, stage, setup, recipe, lora)
    persistent, released_grads = _persistent(setup, states, stage)
    persistent += tuple(persistent_params(spec, setup, recipe, len(stage.layers) / spec.num_layers))
    out = Transients()
    fwd = _forward(spec, setup, stage, recipe, lora, out)
    bwd_held = out.add(*states.backward_held)  # live through backward (DeepSpeed's ipg bucket)
    phases = _backward_phases(spec, setup, stage, recipe, fwd, out)
    if setup.optimizer.in_backward:
        # the head's gradient is stepped first, while every layer's activations are still held
        phases.append((PhaseKind.BACKWARD_LAYER, fwd.in_layers + out.add(*states.backward_extra)))
    else:
        phases += backward_workspace.workspace_phases(spec, setup, stage, recipe, (fwd.layer_only, fwd.in_layers), out)
    phases = _with_stream_pools(phases, stream_pools(spec, setup, recipe, released_grads), out)
    forward = (PhaseKind.FORWARD_END, PhaseKind.FORWARD_LAYER, PhaseKind.FORWARD_DORA)
    phases = [(kind, ix if kind in forward else ix + bwd_held) for kind, ix in phases]
    tied = _tied_accumulation(spec, setup, stage, recipe)
    phases += _release_phases(states, released_grads, fwd.gathered_end, out, tied)
    phases = [(kind, ix + bwd_held if kind == PhaseKind.BACKWARD_END else ix) for kind, ix in phases]
    # a training loop's logits (LitGPT): this step's from the loss on, the previous step's until the next forward
    # returns, so every phase of the step holds one list (and the forward's end both, LossRules.kept)
    phases = [(kind, ix + [j for j in fwd.loss_kept if j not in ix]) for kind, ix in phases]
    # the caching-allocator replay only when asked for (workload/overheads.py AllocatorSettings.replay): else the
    # overheads' flat fraction
    replayed = setup.allocator.replayed
    kept = (persistent, released_grads)
    busiest = _busiest_alike(spec, setup, stage)
    allocations: AllocatorModel | None
    if not replayed:
        allocations = None
    elif busiest == stage:
        allocations = _step_tensors(spec, setup, stage, kept, states, fwd, out)
    else:
        allocations = _stage_plan(spec, setup, busiest).allocator
    # loading comes before the step but is listed last, so the step's phases keep their places (loading.py); it is
    # shown only when it holds more than the step's persistent states: otherwise it cannot be the peak, and its
    # total would list optimizer states that do not exist yet
    master = sum(t.bytes for t in (*states.persistent, *states.host) if t.name == "optimizer/master_weights")
    held = tuple(t for t in persistent if is_tensor(t.name))
    load = loading_term(spec, setup, stage, held, recipe.weight, master, fp32_params=fsdp2_fp32_params(
        StatesSetup.of(setup), recipe))
    phases += [(PhaseKind.LOAD, out.add(load))] if load.bytes else []
    # the base model's buffers (gpt_bigcode's causal mask) sit with its embeddings, on the first stage
    return out.plan(
        persistent=[constant(t) for t in persistent] + (list(buffers(spec)) if stage.first else [])
        + [constant(t) for t in _torchtune_rope_cache(spec, setup)],
        host=states.host,
        phases=phases,
        allocator_fraction=setup.overheads.allocator_fraction,
        notes=_stage_notes(spec, setup, stage, recipe) + ([REPLAY_NOTE] if allocations is not None else []),
        allocator=allocations,
    )


def _busiest_alike(spec: ModelSpec, setup: TrainSetup, stage: Stage) -> Stage:
    """The first stage of the pipeline with ``stage``'s role and layers (``_composition``): the one of them with
    the most micro-batches in flight, whose allocator model (its tensors) they all take. A replay
    is not monotone in the tensors' sizes, so this keeps a later stage alike, whose tensors are no larger, from
    out-reserving the one ``_candidates`` keeps."""
    if setup.parallel.pp == 1:
        return stage
    mine = _composition(spec, setup.peft.freeze_layers, stage)
    return next(s for s in stages(spec, setup.parallel.pp) if _composition(spec, setup.peft.freeze_layers, s) == mine)


def _step_tensors(
    spec: ModelSpec,
    setup: TrainSetup,
    stage: Stage,
    kept: tuple[tuple[Term, ...], Term | None],
    states: ModelStates,
    fwd: _Forward,
    out: Transients,
) -> StepTensors:
    """The step as the allocator sees it (``allocation.py``): the persistent terms and the gradients spread
    over the parameter tensors, the layers' saved tensors, the forward's other tensors, the loss's and the
    step's temporaries."""
    persistent, released_grads = kept
    persistent = tuple(t for t in persistent if is_tensor(t.name))
    shapes, n = parameter_tensors(spec, stage, setup.parallel), len(stage.layers)
    layer: list[int] = []
    outside: list[int] = []
    # one tensor per parameter for the weights (whatever their category), the master copy and the gradients;
    # Adam's two states per parameter (exp_avg, exp_avg_sq: torch/optim/adamw.py _init_group), one otherwise
    per_param = 2 if "adam" in str(setup.optimizer.name) else 1
    weights = sum(t.bytes for t in persistent if t.name.startswith("weights/"))
    # torch's optimizers create their states in the first step() (torch/optim/adam.py Adam._init_group: "if
    # len(state) == 0: ... zeros_like(p)"), among the blocks the first forward and backward left split; DeepSpeed's
    # ZeRO optimizers take a step of zero gradients at construction for this very reason (stage_1_and_2.py
    # DeepSpeedZeroOptimizer.__init__, stage3.py _setup_for_real_optimizer: initialize_optimizer_states, "This
    # helps prevent memory fragmentation by allocating optimizer state at the beginning of training")
    lazy = not (setup.parallel.sharding.stage and setup.parallel.fsdp == FsdpMode.NONE)
    states_bytes = sum(t.bytes for t in persistent if t.name == "optimizer/states") if lazy else 0
    others = [(t.bytes, per_param if t.name == "optimizer/states" else 1) for t in persistent]
    others = [
        o
        for o, t in zip(others, persistent, strict=True)
        if not t.name.startswith("weights/") and not (lazy and t.name == "optimizer/states")
    ]
    for total, copies in [(weights, 1), *others]:
        one, rest = spread(total // copies, shapes, n)
        layer += one * copies
        outside += rest * copies
    layer_states, outside_states = spread(states_bytes // per_param, shapes, n)
    layer_grads, outside_grads = spread(released_grads.bytes if released_grads else 0, shapes, n)
    layer_step, outside_step = spread(sum(t.bytes for t in states.step_extra), shapes, n)
    per_layer = set(fwd.in_layers[: fwd.per_layer.rules])
    mb = setup.allocator.max_split_size_mb
    shortest = setup.allocator.replay_min_seq
    return StepTensors(
        layers=n,
        layer_persistent=tuple(layer),
        outside_persistent=tuple(outside),
        layer_grads=layer_grads,
        outside_grads=outside_grads,
        saved=fwd.per_layer.saved,
        rebuilt=fwd.per_layer.rebuilt,
        held=tuple(out.rules[j] for j in fwd.held if j not in per_layer),
        loss_temporaries=tuple(out.rules[j] for j in fwd.loss_backward),
        loss_forward=tuple(out.rules[j] for j in fwd.loss_only_forward),
        step=tuple(constant(t) for t in states.backward_extra),
        layer_step=layer_step,
        outside_step=outside_step,
        layer_states=layer_states * per_param,
        outside_states=outside_states * per_param,
        config=AllocatorConfig(
            expandable_segments=setup.allocator.expandable_segments,
            max_split_size=None if mb is None else mb * MIB,
        ),
        shorter=0 if shortest is None else _run_seq(replace(setup, seq=shortest)),
    )


def _lora(spec: ModelSpec, setup: TrainSetup) -> list[LoraModule]:
    """The LoRA modules of LoRA, QLoRA and DoRA (none for the other methods), refusing what peft refuses."""
    targets = litgpt_lora_modules if runs_litgpt_code(setup) else lora_targets  # LitGPT's own LoRA modules
    lora = targets(spec, setup.peft.lora_targets) if setup.peft.method in LORA_LIKE else []
    check_method(spec, setup.peft, lora)
    return lora


def _dequantized(spec: ModelSpec, base: str) -> Term:
    largest = max(g.count // g.tensors for g in parameter_groups(spec) if in_layer(g) and g.kind == "linear")
    return Term(
        name="qlora/dequantized_weight",
        bytes=largest * 2,
        formula=f"largest layer weight {largest:,} x 2 B, dequantized from {base} for its matmul",
        # bitsandbytes MatMul4Bit.forward/backward: dequantize_4bit(B) then a 16-bit matmul; transformers
        # FP8Linear backward: _dequantize_fp8_weight to the gradient's dtype; GPTQ/AWQ torch kernels dequantize
        source="a quantized base dequantizes one weight at a time for its matmul (bitsandbytes MatMul4Bit, "
        "transformers FP8Linear backward)",
    )


_TRAINED_HEADS = (
    "a causal LM (*ForCausalLM, *LMHeadModel), a masked LM (*ForMaskedLM) or a *ForSequenceClassification / "
    "*ForTokenClassification"
)


def _check_classifier(model: ModelSpec, setup: TrainSetup) -> None:
    """A classifier trains like its causal LM with a num_labels-wide head, an encoder's masked LM with its own
    (estimate/train/encoder.py); a bare model has no loss, and peft's classifier tasks train the score fully
    (modules_to_save), which the adapter states omit."""
    trained = (HeadKind.SEQUENCE_CLASSIFICATION, HeadKind.TOKEN_CLASSIFICATION, HeadKind.MASKED_LM)
    if model.head not in trained:
        raise InvalidWorkloadError(
            f"{model.name} has {head_words(model)} (architectures[0]): training covers {_TRAINED_HEADS}; "
            "a config.json whose architectures[0] names one (BertForMaskedLM, ...) trains it",
            field="model",
            allowed=_TRAINED_HEADS,
        )
    for option, value, allowed in (
        ("peft", setup.peft.adapters, "none for a classifier or masked LM (peft trains the head fully)"),
        ("loss", setup.loss != LossImpl.FULL, "full for a classifier or masked LM (the others are over a vocabulary)"),
        ("tp", setup.parallel.tp > 1, "1 for a classifier or masked LM (its head has no tensor-parallel plan)"),
    ):
        if value:
            raise InvalidWorkloadError(
                f"{option}: {model.name} has {head_words(model)}; allowed: {allowed}", field=option, allowed=allowed
            )


def _check(model: Model, setup: TrainSetup) -> ModelSpec:
    if isinstance(model, BareModel):
        raise NeedsArchitectureError(
            "training estimates need the architecture (layers, heads, hidden size, vocabulary): "
            "name a catalog model or a config.json, or use --mode textbook with a bare size"
        )
    if model.encoder_decoder is not None:
        seq2seq.check(model, setup)
    elif setup.decoder_seq is not None:
        raise InvalidWorkloadError(
            f"decoder_seq: {model.name} is not an encoder-decoder model; its sequence is --seq",
            field="decoder_seq",
            allowed="an encoder-decoder model (T5, mT5)",
        )
    if model.head is not HeadKind.CAUSAL_LM:
        _check_classifier(model, setup)
    refuse_training(model)  # state-space hybrids (estimate/ssm_state.py)
    check_layout(model, setup)
    training_base(model, setup.peft)  # refuses what transformers cannot train, in one line, before any term
    check_knobs(model, setup)  # issue 14's knobs: the combinations their code cannot run
    check_setup(setup)  # what peft itself refuses, or prompt learning under pp/cp (peft_methods.py)
    _lora(model, setup)
    return model


# Plans are shared by setups that differ only in the micro-batch and, except under eager attention (whose
# scores grow with it), the sequence: the key is every other field (``TrainSetup.static``).
_PLANS: dict[tuple, tuple[Plan, ...]] = {}


def _composition(spec: ModelSpec, freeze: int, stage: Stage) -> tuple[bool, bool, dict[tuple, int]]:
    """What a stage's plan depends on besides its micro-batches in flight: its first/last role and how many of
    its layers are of each kind (MoE or dense, trainable or frozen, sliding or full attention).

    Every per-layer quantity of the plan reads only these: ``_saved_per_token`` (MoE or dense, recording),
    ``_any_sliding`` (the sliding mask), ``stage_share`` and ``states._trainable`` (layer, MoE and trainable
    counts).
    """
    moe = set(spec.moe.moe_layers) if spec.moe else set()
    kinds: dict[tuple, int] = {}
    for i in stage.layers:
        kind = (i in moe, i >= freeze, spec.layer_attention(i) == "sliding")
        kinds[kind] = kinds.get(kind, 0) + 1
    return stage.first, stage.last, kinds


def _candidate_stages(spec: ModelSpec, setup: TrainSetup) -> list[Stage]:
    """The stages that can be the worst GPU, in stage order (``_candidates``)."""
    return list(_candidates(spec, setup.parallel.pp, setup.peft.freeze_layers))


@functools.lru_cache(maxsize=1024)
def _candidates(spec: ModelSpec, pp: int, freeze: int) -> tuple[Stage, ...]:
    """The stages that can be the worst GPU, in stage order.

    A middle stage can exceed the first and the last: DeepSeek's dense first layers
    (``first_k_dense_replace``) leave the first stage fewer experts than a middle one, and frozen bottom
    layers leave the first stages fewer gradients. A stage is left out only when an earlier stage of the same
    role (first, last or middle) has the same layers of every kind: the micro-batches in flight (by which the
    activations grow) never grow with the stage index (``_in_flight``), so that earlier stage's every tensor is
    at least as large. (At least as many layers was enough while the allocator reserve was a fraction of the
    tensors; the caching-allocator replay is not monotone in the layers, so a stage with fewer stays.) A uniform
    model keeps at most four (first, the two middle lengths, last).
    """
    kept: list[tuple[Stage, tuple[bool, bool], dict[tuple, int]]] = []
    for s in stages(spec, pp):
        first, last, kinds = _composition(spec, freeze, s)
        dominated = any(role == (first, last) and held == kinds for _, role, held in kept)
        if not dominated:
            kept.append((s, (first, last), kinds))
    return tuple(s for s, _, _ in kept)


def _as_run(model: Model, setup: TrainSetup) -> TrainSetup:
    """The setup as the family runs it: one with only its own eager attention code (BLOOM, ImplTraits.eager_only)
    materialises its scores whatever --attention says, as transformers builds it eager."""
    if isinstance(model, ModelSpec) and model.traits.eager_only and setup.attention != AttentionImpl.EAGER:
        return replace(setup, attention=AttentionImpl.EAGER)
    return setup


def _worst_candidates(model: Model, setup: TrainSetup) -> tuple[Plan, ...]:
    """Plans of the stages that can be the worst GPU (``_candidate_stages``), in stage order."""
    setup = _as_run(model, setup)
    # encoder-decoder plans are per sequence length (estimate/train/seq2seq.py writes them per sequence)
    per_seq = setup.attention == AttentionImpl.EAGER or (isinstance(model, ModelSpec) and model.encoder_decoder)
    key = (model, setup.static, setup.seq if per_seq else 0)
    hit = _PLANS.get(key)
    if hit is None:
        spec = _check(model, setup)
        hit = tuple(_stage_plan(spec, setup, s) for s in _candidate_stages(spec, setup))
        if len(_PLANS) > 4096:
            _PLANS.clear()
        _PLANS[key] = hit
    return hit


def _run_seq(setup: TrainSetup) -> int:
    """The sequence the model runs: prompt tuning prepends its virtual tokens to every sequence
    (PeftModelForCausalLM.forward: torch.cat((prompts, inputs_embeds), dim=1), labels padded with -100)."""
    return setup.seq + setup.peft.virtual_tokens


def _vars(model: Model, setup: TrainSetup) -> Vars:
    chunk = setup.loss_chunk
    seq = _run_seq(setup)
    if setup.loss == LossImpl.LIGER and isinstance(model, ModelSpec):  # Liger sizes its chunk from BT, V and H
        tokens = setup.batch * seq // setup.parallel.cp
        chunk = liger_chunk(tokens, model.vocab_size, model.hidden_size)
    return Vars.training(setup.batch, seq, setup.parallel.cp, chunk)


def _positions(model: Model, setup: TrainSetup) -> str | None:
    """The sequence against the model's positions (``estimate/positions.py``): outside the plans' cache,
    which the sequence does not key."""
    return None if isinstance(model, BareModel) else training_positions(model, setup)


def _noted(est: Estimate, note: str | None) -> Estimate:
    peak = est.peak_phase
    if peak is not None and peak.kind is PhaseKind.LOAD:
        path = peak.transient[0].name.removeprefix("loading/")
        note = (f"{note}; " if note else "") + (
            f"the peak is while loading the checkpoint ({path}), before the first step: a run that does not fit "
            "dies while loading (--loading names the other paths)"
        )
    return replace(est, notes=(*est.notes, note)) if note else est


def training_peak(model: Model, setup: TrainSetup) -> int:
    """Peak bytes of the worst GPU, without rendering terms: the number ``estimate_training`` reports."""
    plans = _worst_candidates(model, setup)
    _positions(model, setup)
    v = _vars(model, _as_run(model, setup))
    return max(plan.peak(v) for plan in plans)


def training_floor(model: Model, setup: TrainSetup) -> int:
    """A lower bound of ``training_peak`` that replays nothing (``Plan.floor``: the peak without the allocator
    reserve): a setup whose floor misses the budget misses it, whatever the caching-allocator replay adds."""
    plans = _worst_candidates(model, setup)
    _positions(model, setup)  # refuses what training_peak refuses
    v = _vars(model, _as_run(model, setup))
    return max(plan.floor(v) for plan in plans)


def estimate_stages(model: Model, setup: TrainSetup) -> list[Estimate]:
    """One estimate per pipeline stage (a single one without pipelining)."""
    setup = _as_run(model, setup)
    spec = _check(model, setup)
    note = _positions(spec, setup)
    v = _vars(model, setup)
    return [_noted(_stage_plan(spec, setup, s).render(v), note) for s in stages(spec, setup.parallel.pp)]


def estimate_training(model: Model, setup: TrainSetup) -> Estimate:
    """The worst GPU: the pipeline stage with the highest peak, every term rendered with its formula."""
    plans = _worst_candidates(model, setup)
    note = _positions(model, setup)
    v = _vars(model, setup)
    plan = max(plans, key=lambda p: p.peak(v))
    return _noted(plan.render(v), note)


def phase_totals(model: ModelSpec, setup: TrainSetup) -> list[int]:
    """Per-GPU bytes of every phase of the stages that can be the worst (``_candidate_stages``).

    The layout search uses these at two micro-batch sizes: each phase grows linearly with the micro-batch
    (but for rounding and the loss chunk), so the peak at any micro-batch is about the largest of these lines.
    """
    plans = _worst_candidates(model, setup)
    _positions(model, setup)
    v = _vars(model, setup)
    return [n for plan in plans for n in plan.phase_bytes(v)]
