"""ModelSpec: the exact architecture of a transformer, independent of any framework.

Adapters (``spec/adapters``) build it from a Hugging Face ``config.json``; nothing downstream reads
raw config keys. Every field is something that changes a parameter count, a KV cache or an activation.

Glossary of symbols used in formulas across the package:
    b batch, s sequence (prompt) length, n new tokens, h hidden size, L layers, a attention heads,
    n_kv key/value heads, d head dim, i MLP intermediate size, V vocabulary, E experts, k top-k,
    t tensor-parallel degree, p pipeline-parallel degree, N data-parallel degree, Φ parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from vramwise.spec.ssm import SsmSpec
from vramwise.spec.traits import HeadKind, ImplTraits

if TYPE_CHECKING:  # types of optional fields, imported where they are built: a plain decoder loads neither
    from vramwise.spec.checkpoint import CheckpointBytes
    from vramwise.spec.encoder_decoder import EncoderDecoderSpec
    from vramwise.spec.rope import RopeSpec

AttentionKind = Literal["mha", "mla"]
LayerAttention = Literal["full", "sliding"]
NormKind = Literal["rms", "layer"]


@dataclass(frozen=True, kw_only=True)
class MlaSpec:
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank q and a shared compressed KV latent."""

    q_lora_rank: int | None  # None: a plain q_proj (V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True, kw_only=True)
class AttentionSpec:
    """Self-attention of one layer. MQA is ``num_kv_heads == 1``, GQA ``1 < num_kv_heads < num_heads``."""

    kind: AttentionKind = "mha"
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: Literal["none", "rms", "layer"] = "none"  # per-head norm of q and k (Qwen3, Gemma3, Phi)
    sinks: bool = False  # learned per-head attention-sink logits (gpt-oss)
    mla: MlaSpec | None = None
    sliding_window: int | None = None
    layer_types: tuple[LayerAttention, ...] = ()  # one per layer; empty means all "full"
    logit_softcap: bool = False  # tanh soft-capping of the attention scores (Gemma 2)


@dataclass(frozen=True, kw_only=True)
class MlpSpec:
    """A dense feed-forward block: gated (SwiGLU/GeGLU: gate, up, down) or plain (up, down)."""

    gated: bool
    intermediate_size: int
    bias: bool = False
    activation: str = "silu"


@dataclass(frozen=True, kw_only=True)
class MoeSpec:
    """Mixture of experts replacing the dense MLP on ``moe_layers``."""

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    moe_layers: tuple[int, ...]  # indices of layers whose MLP is the MoE block
    shared_intermediate_size: int = 0  # all shared experts together, as one gated MLP
    shared_bias: bool = False  # DeepSeek-V2's shared experts reuse the dense MLP class, biases included
    shared_expert_gate: bool = False  # Qwen2-MoE scales the shared expert by sigmoid(Linear(h, 1))
    router_bias: bool = False
    expert_bias: bool = False
    # transformers >= 5.24 keeps DeepSeek-V2/V3 router weights in fp32 whatever the load dtype
    # (_keep_in_fp32_modules_strict = ["gate.weight"]).
    router_fp32: bool = False


@dataclass(frozen=True, kw_only=True)
class NormSpec:
    """Normalisation layers: kind, whether they carry a bias, how many per layer, and a final norm."""

    kind: NormKind
    bias: bool = False
    per_layer: int = 2
    final: bool = True


@dataclass(frozen=True, kw_only=True)
class EmbeddingSpec:
    """Input embeddings: tokens, learned positions, token types, an embedding norm or projection."""

    vocab_size: int
    learned_positions: int = 0  # rows of a learned position table (OPT adds an offset of 2)
    token_types: int = 0  # BERT's segment embeddings
    norm: bool = False  # BERT's embedding LayerNorm
    proj_dim: int | None = None  # OPT-350m: tokens embedded in proj_dim, projected in and out


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Exact description of a transformer, enough to count every parameter and size every activation."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    embedding: EmbeddingSpec
    attention: AttentionSpec
    mlp: MlpSpec  # the dense MLP (used on every layer that is not an MoE layer)
    norm: NormSpec
    traits: ImplTraits  # how the family's transformers code runs; no default: each adapter states them
    moe: MoeSpec | None = None
    tied_embeddings: bool = False
    head_bias: bool = False  # Phi-2's lm_head has a bias
    pooler: bool = False  # BERT's pooler: Linear(h, h) with bias
    parallel_block: bool = False  # attention and MLP read the same input (GPT-J, Phi-2, Falcon)
    max_position_embeddings: int | None = None
    final_logit_softcap: bool = False  # tanh soft-capping of the output logits (Gemma 2)
    dropout: float = 0.0  # residual and embedding dropout in training (GPT-2 0.1, OPT 0.1; modern LLMs 0)
    attention_dropout: float = 0.0  # dropout on the attention probabilities in training
    mtp_layers: int = 0  # DeepSeek-V3 multi-token-prediction layers: in the checkpoint, not in transformers
    stored_dtype: str = "bf16"  # dtype of the published checkpoint
    stored_format: str | None = None  # quantized checkpoint format (fp8, mxfp4, gptq-4bit-g128, nf4...), if any
    # A quantization_config no format expresses (compressed-tensors, GPTQ without groups...): the (field, value)
    # formats.default_format names when it refuses to guess the checkpoint's weight bytes.
    unread_quantization: tuple[str, str] | None = None
    # The checkpoint's own bytes per category, from its safetensors headers or GGUF tensor infos (None for a
    # config.json alone or a catalog entry): the weights term reads these when the format is the checkpoint's.
    checkpoint: CheckpointBytes | None = None
    # Hybrid state-space models (Jamba): the Mamba layers, which have no attention and keep a fixed state per
    # sequence instead of a KV cache (spec/ssm.py). None: attention on every layer.
    ssm: SsmSpec | None = None
    # quantization_config.quant_method (lowercase) when stored_format was read from it: training follows the
    # method's transformers quantizer (is_trainable, a dequantize option): spec/adapters/quant_config.py
    quant_method: str | None = None
    # quantization_config skip-list entries naming projections inside the layers (kept in high precision there):
    # the layouts count them quantized, so the report says so (spec/adapters/quant_config.py kept_in_layers)
    quant_kept: tuple[str, ...] = ()
    # bitsandbytes 4-bit: bnb_4bit_compute_dtype ("fp32" when the config omits it, BitsAndBytesConfig's default),
    # the dtype Linear4bit casts its input to and dequantizes the weight to (estimate/dequant.py)
    quant_compute_dtype: str | None = None
    # The classifier's outputs (sequence or token classification heads; 0 for any other head): len(id2label),
    # else num_labels, else PretrainedConfig's default 2. Set by spec/heads.py from architectures[0].
    num_labels: int = 0
    # Buffers the model allocates on the device besides its parameters (bytes): GPTBigCodeModel.bias, a
    # (n_positions, n_positions) bool causal mask registered with nn.Buffer(persistent=False) and never read.
    buffer_bytes: int = 0
    source: str = field(default="", compare=False)  # where the spec came from (path or catalog)
    vision: VisionSpec | None = None  # a vision-language model's vision tower and projector (None: text only)
    # T5/mT5: the encoder stack and the decoder's cross-attention (spec/encoder_decoder.py); the fields above
    # then describe the decoder stack. None for every decoder-only or encoder-only model.
    encoder_decoder: EncoderDecoderSpec | None = None
    # The rotary configuration (spec/rope.py: scaling type, factor, original context, partial rotary); None for a
    # model without rotary or a spec built without a config.json's keys. No parameter depends on it: the serving
    # engines size the cos/sin table they build at load from it (engines/rope_cache.py).
    rope: RopeSpec | None = None

    @property
    def vocab_size(self) -> int:
        return self.embedding.vocab_size

    @property
    def lm_head(self) -> bool:
        """An LM head over the vocabulary (tied or not): causal or masked LM; bare models and classifiers have none."""
        return self.traits.head in (HeadKind.CAUSAL_LM, HeadKind.MASKED_LM)

    @property
    def head(self) -> HeadKind:
        """What sits on top of the layers (``architectures[0]``, or the family's default)."""
        return self.traits.head

    @property
    def dense_layers(self) -> int:
        """Layers whose MLP is dense."""
        return self.num_layers - self.moe_layer_count

    @property
    def moe_layer_count(self) -> int:
        return len(self.moe.moe_layers) if self.moe else 0

    def __hash__(self) -> int:
        # Specs key the estimators' caches; hashing the nested fields on every lookup costs more than the lookup.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))
            object.__setattr__(self, "_hash", cached)
        return cached

    def layer_attention(self, index: int) -> LayerAttention:
        """Whether layer ``index`` attends to all previous tokens or to a sliding window."""
        types = self.attention.layer_types
        return types[index] if types else ("sliding" if self.attention.sliding_window else "full")


@dataclass(frozen=True, kw_only=True)
class VisionSpec:
    """The vision tower and projector of a vision-language model, and how images enter the language model.

    Built by ``spec/adapters/vision.py`` from the config's ``vision_config`` and projector keys. ``groups`` holds
    the tower's and projector's tensors as (name, count, kind, tensors, in_features), named ``vision.*`` and
    ``projector.*``, so the parameter inventory (``spec/params.py``) counts them like any other group.
    """

    family: str  # the tower's design, for labels and notes: clip, siglip, qwen2_vl, qwen2_5_vl, mllama
    groups: tuple[tuple[str, int, str, int, int], ...]
    hidden_size: int  # the tower's width (hv)
    intermediate_size: int  # its MLP width (iv)
    num_heads: int
    num_layers: int  # every transformer layer the tower runs (mllama: local + global)
    gated_mlp: bool = False  # Qwen2.5-VL's vision blocks use SwiGLU (gate, up, down)
    # Per image: how many sequences the tower encodes (idefics3's splits + the global image) and the patches each
    # attends over (CLIP's class token included; mllama's tiles concatenated and padded to a multiple of 8).
    sequences_per_image: int = 1
    patches_per_sequence: int
    tokens_per_image: int  # tokens each image adds to the text context (placeholders the features replace)
    cross_layers: tuple[int, ...] = ()  # mllama: text layers that cross-attend to the image instead of self-attending
    cross_tokens_per_image: int = 0  # mllama: vision tokens each cross-attention layer keeps K and V of
    assumption: str = ""  # what the image count rests on (a processor default), said in the report's notes
    # How an image's resolution sets its tokens (estimate/vision.py): "fixed" (the processor resizes every image to
    # one size: llava, gemma3, mllama), "qwen2_vl" (smart_resize to multiples of patch x merge), "idefics3" (tiles).
    resolution: str = "fixed"
    patch_size: int = 0  # qwen2_vl: a patch's side in pixels; idefics3: a tile's side (the tower's image_size)
    merge_size: int = 1  # qwen2_vl: spatial_merge_size (merge x merge patches become one token)
    tokens_per_tile: int = 0  # idefics3: image_seq_len, the tokens of one tile after the pixel shuffle
    # What the tower's forward keeps beside one layer's temporaries (estimate/vision.py; traced in
    # tests/estimate/test_vision_trace.py):
    mlp_copies: int = 2  # MLP intermediates at its peak: fc1 and its activation; 3 for quick_gelu and SwiGLU
    rotary_fp32: bool = False  # Qwen2-VL's apply_rotary_pos_emb_vision works on fp32 copies of q and k
    scores_one_image: bool = False  # Qwen2-VL's non-flash attention runs image by image (split by cu_seqlens)
    retained_layers: int = 0  # mllama: the local encoder keeps every layer's output (for its intermediate layers)
    held_elements: int = 0  # per sequence, in the compute dtype: pixel copies, masks, the patch embeddings
    held_bytes: int = 0  # per sequence, raw bytes: idefics3's boolean pixel mask
    # Whether the checkpoint's quantized format reaches the tower and projector: False when its quantization_config
    # skips them (AWQ's modules_to_not_convert ["visual"], llm-compressor's ignore) or quantizes only the language
    # model's blocks (GPTQ's block_name_to_quantize); formats then keep them in 16 bit.
    quantized: bool = True
