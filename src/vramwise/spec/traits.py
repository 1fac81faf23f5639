"""Implementation traits: how a family's transformers code runs, beyond the shapes of its parameters.

Two models with equal shapes can keep different tensors in training: a fused projection keeps one output
where separate ones keep three, Gemma multiplies its norm weight in fp32, GPT-2's softmax stays in the
compute dtype. Each adapter states these traits once (``ModelSpec.traits``); the estimators read the traits
and never the ``model_type``, so a new family (or an importer with no transformers ``model_type``) touches
one adapter plus its oracle test.

The defaults describe transformers' Llama code (``models/llama/modeling_llama.py``), which most decoder
families copy through modular transformers. They are not assumed silently: ``ModelSpec`` has no default
for ``traits``, so every adapter passes them, and ``ImplTraits()`` is that documented Llama baseline, except
for LoRA, where a family peft does not list gets no default targets (the user names them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum


class Positions(StrEnum):
    """How token positions enter the model."""

    ROTARY = "rotary"  # cos/sin tables applied to q and k in every layer (Llama, NeoX, Falcon, DeepSeek, ...)
    LEARNED = "learned"  # a learned position table added to the embeddings (GPT-2, OPT, BERT)
    # a learned bias per (bucketed) relative distance and head, added to the attention scores (T5's
    # relative_attention_bias, modeling_t5.T5Attention.compute_bias): no table to run past, no rotary
    RELATIVE = "relative"
    # no position encoding at all: order comes from the recurrent layers (Jamba: JambaAttention applies no rotary,
    # modeling_jamba.py lines 173-207, and there is no position table)
    NONE = "none"
    # a per-head linear bias added to the attention scores, no table and no rotation (BLOOM:
    # modeling_bloom.build_alibi_tensor, a (b·a, 1, s) tensor fed to alibi.baddbmm in BloomAttention.forward)
    ALIBI = "alibi"


class HeadKind(StrEnum):
    """What sits on top of the layers: the class ``architectures[0]`` names (spec/heads.py reads it)."""

    CAUSAL_LM = "causal_lm"  # an lm_head over the vocabulary (tied or not): *ForCausalLM, *LMHeadModel
    # BertOnlyMLMHead: a dense h x h with bias, the activation and a LayerNorm, then a decoder tied to the
    # token embeddings with its own bias over V; logits at every position (modeling_bert.BertLMPredictionHead)
    MASKED_LM = "masked_lm"
    # Linear(h, num_labels): decoders score every position without bias and keep the last non-pad token's row
    # (GenericForSequenceClassification.score); BERT pools the first token and classifies with a bias
    # (BertForSequenceClassification.classifier)
    SEQUENCE_CLASSIFICATION = "sequence_classification"
    # Linear(h, num_labels) with bias on every position (GenericForTokenClassification.score,
    # BertForTokenClassification.classifier, GPT2ForTokenClassification.classifier)
    TOKEN_CLASSIFICATION = "token_classification"
    BARE = "bare"  # *Model: the final hidden states, no head (BertModel keeps its pooler)
    ENCODER = "bare"  # the name BertModel's head had before architectures[0] was read (an alias of BARE)


# Heads transformers builds for a decoder family (its AutoModelFor* mappings in models/auto/modeling_auto.py);
# tests/spec/test_traits.py compares every family's list with those mappings.
DECODER_HEADS = (
    HeadKind.CAUSAL_LM,
    HeadKind.SEQUENCE_CLASSIFICATION,
    HeadKind.TOKEN_CLASSIFICATION,
    HeadKind.BARE,
)


# peft module names of a family: (module name, the parameter groups it holds), in peft's order. One name
# may appear twice (GPT-2 calls both output projections c_proj).
PeftModules = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, kw_only=True)
class ImplTraits:
    """Family behaviour of the transformers implementation that changes memory but not parameter counts.

    Each field says what it changes in the estimate and where transformers does it.
    """

    # Rotary: training keeps one cos and sin table per step (estimate/train/training.py) and q is rotary's
    # new tensor; learned: q is a view of the projection (estimate/train/activations.py). The limit of either
    # is ModelSpec.max_position_embeddings; a learned table's rows are EmbeddingSpec.learned_positions.
    # Source: each modeling file's *RotaryEmbedding, or wpe (GPT-2), embed_positions (OPT), position_embeddings (BERT).
    positions: Positions = Positions.ROTARY
    # Causal LM or encoder: the LM head's parameters, the logits, and whether training applies at all.
    # Source: AutoModelForCausalLM vs AutoModel (BertModel).
    head: HeadKind = HeadKind.CAUSAL_LM
    # One Linear for q, k and v: its input is kept once, not once per projection, and without rotary the
    # fused output stays alive through q's view. Source: Phi3Attention.qkv_proj, GPT2Attention.c_attn,
    # GPTNeoXAttention.query_key_value, FalconAttention.query_key_value.
    fused_qkv: bool = False
    # One Linear for gate and up (Phi3MLP.gate_up_proj): one input kept, and inference keeps the 2i output
    # beside act(gate) and the product (estimate/workspace.py).
    fused_gate_up: bool = False
    # Rotary written as torch.cat of the rotated and passed-through halves: q comes out contiguous in
    # (batch, heads, seq, dim) order, so the attention kernel's output is too and o_proj needs a transposed
    # copy. Source: apply_rotary_pos_emb in modeling_phi.py, modeling_phi3.py and modeling_gpt_neox.py.
    rotary_cat_copy: bool = False
    # RMSNorm multiplies its weight in fp32 and casts after, so the normalised tensor kept for the weight's
    # gradient is fp32 (4 bytes) rather than the compute dtype. Source: GemmaRMSNorm (output * (1 + w.float())),
    # also Gemma2/Gemma3; GptOssRMSNorm ((self.weight * hidden_states).to(input_dtype)). Llama casts first.
    norm_weight_fp32: bool = False
    # Eager attention's softmax in the compute dtype (no fp32 probabilities and cast back). Source:
    # eager_attention_forward in modeling_gpt2.py (softmax(attn_weights, dim=-1)), modeling_falcon.py
    # (dtype=hidden_states.dtype) and modeling_gpt_oss.py (dtype=combined_logits.dtype); Llama uses fp32.
    softmax_in_compute_dtype: bool = False
    # KV heads expanded to every query head before the attention kernel, so the kernel's k and v have the
    # query width. Source: FalconAttention (torch.broadcast_to(key, query.shape)).
    kv_broadcast: bool = False
    # Tensors one routed expert keeps per token, in units of its intermediate size, besides the product fed
    # to down_proj: gate_up (2) and act(gate) (1) in the default gate (integrations/moe.py _default_apply_gate).
    # gpt-oss: 7. GptOssExperts._apply_gate (modeling_gpt_oss.py) clamps the strided gate and up views of
    # gate_up, then glu = gate * sigmoid(gate * alpha) and (up + 1) * glu; autograd keeps gate_up (2, the
    # views' storage), the clamped gate, sigmoid's output, glu and up + 1 (1 each), that is 6 by the saved-
    # tensor listing of transformers 5.24; the estimate has used 7 since it was fitted to traced steps
    # (tests/estimate/test_train_vs_trace.py, 5% bound), kept here unchanged.
    expert_intermediates: int = 3
    # The router casts its input to fp32 (a 4h copy per token kept for the router weight's gradient).
    # Source: DeepseekV2/V3TopkRouter (F.linear(hidden_states.type(torch.float32), ...)).
    router_input_fp32: bool = False
    # peft's module names for the decoder linears; None: transformers' Llama names (q_proj, k_proj, v_proj,
    # o_proj, gate_proj, up_proj, down_proj, and DeepSeek's q_a_proj, kv_a_proj_with_mqa, ...), one per
    # parameter group. Source: the family's modeling file (the nn.Linear attribute names).
    peft_modules: PeftModules | None = None
    # LoRA targets when the user names none: peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    # (peft/utils/constants.py); empty when peft lists no default, which makes it the user's choice.
    peft_default_targets: tuple[str, ...] = ()
    # The heads transformers has a class for (architectures[0] naming another is refused in one line), and
    # whether sequence classification pools the first token through a pooler and classifies with a bias
    # (BERT) rather than scoring the last non-pad token without one (every decoder).
    # Source: models/auto/modeling_auto.py MODEL_FOR_*_MAPPING_NAMES; BertForSequenceClassification.
    heads: tuple[HeadKind, ...] = DECODER_HEADS
    pooled_classifier: bool = False
    # The family's attention has one path, its own eager code, whatever implementation is asked for: the
    # scores are materialised (estimate/workspace.py). Source: BloomAttention.forward (alibi.baddbmm, then
    # softmax); BloomPreTrainedModel declares neither _supports_sdpa nor _supports_flash_attn.
    eager_only: bool = False
    # The attention's output projection stays referenced through the MLP (one more h per token in the MLP's
    # live set, estimate/workspace.py). Source: GPTBigCodeBlock.forward keeps ``attn_output`` as a local
    # after ``hidden_states = attn_output + residual`` (traced: tests/estimate/test_infer_vs_trace.py).
    mlp_sees_attention_output: bool = False
    # A serving engine keys this on the architecture, not on the config's numbers: SGLang gives the sliding-window
    # layers a pool of their own, smaller than the full layers' (python/sglang/srt/configs/model_config.py
    # is_hybrid_swa_model: GptOssForCausalLM, Llama4ForConditionalGeneration, MiMo-V2, Step3p5; engines/sglang.py).
    sglang_hybrid_swa: bool = False
    # Causal self-attention that keeps its keys and values for later tokens (a KV cache), so the model can
    # generate. False for an encoder: BERT's BertModel.forward sets use_cache = False unless config.is_decoder
    # (modeling_bert.py, transformers 5.24: "if self.config.is_decoder: use_cache = ... else: use_cache = False"),
    # and BertLayer builds BertAttention(config, is_causal=config.is_decoder): bidirectional, no cache. Such a
    # model runs one forward: no KV cache term, no decode steps (estimate/kv_cache.py check_generates).
    causal_kv_cache: bool = True
    # IA3 (peft 0.21 utils/constants.py): its default targets (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING)
    # and the feedforward modules whose input, not output, it scales (..._IA3_FEEDFORWARD_MODULES_MAPPING). peft
    # fills feedforward_modules from that mapping even when the user names the targets (IA3Model.
    # _prepare_adapter_config), so a family without an entry (empty here) cannot train IA3 without both named.
    ia3_targets: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()

    @property
    def rotary(self) -> bool:
        return self.positions is Positions.ROTARY


# The Llama-style families peft gives a default for: LoRA on q_proj and v_proj.
LLAMA_QV = ImplTraits(peft_default_targets=("q_proj", "v_proj"))
# peft's IA3 mapping: "llama" and "mistral" scale k, v and down_proj; "qwen2", "qwen3" and the Gemmas q, v and
# down_proj; down_proj is the feedforward module in each.
LLAMA_IA3 = dataclasses.replace(LLAMA_QV, ia3_targets=("k_proj", "v_proj", "down_proj"), ia3_feedforward=("down_proj",))
QWEN_IA3 = dataclasses.replace(LLAMA_QV, ia3_targets=("q_proj", "v_proj", "down_proj"), ia3_feedforward=("down_proj",))
