"""What CUDA autocast does to the dtype of a transformers layer's saved tensors (the ``amp`` recipes).

Under ``--precision amp`` / ``amp-fp16`` (fp32 weights, ``torch.autocast``: the HF Trainer's ``bf16=True`` /
``fp16=True`` over fp32 weights, accelerate's ``mixed_precision``), each op runs by the autocast policy of the
device. The policies are registered in pytorch/pytorch aten/src/ATen/autocast_mode.cpp (commit 008ec6b1840c):

  CUDA (``TORCH_LIBRARY_IMPL(aten, Autocast, m)``): ``AT_FORALL_LOWER_PRECISION_FP`` (matmul, linear, bmm, ...:
      16-bit), ``AT_FORALL_FP32`` (``KERNEL_CUDA(op, fp32)``: every floating input cast to fp32, among them
      ``layer_norm``, ``native_layer_norm``, ``group_norm``, ``pow``, ``rsqrt``, ``exp``, ``log``, ``nll_loss``,
      ``mse_loss``, ``logsumexp``) and ``AT_FORALL_FP32_SET_OPT_DTYPE`` (``fp32_set_opt_dtype``: ``softmax``,
      ``log_softmax``, ``sum``, ``cumsum``, ``prod``, vector norms run with ``dtype=float32`` unless one is given);
      the lists are autocast_mode.h's macros of the same names. The torch docs' "Automatic Mixed Precision package"
      page lists the same ops under "CUDA Ops that can autocast to float32".
  CPU (``TORCH_LIBRARY_IMPL(aten, AutocastCPU, m)``): its fp32 list holds losses (``nll_loss``,
      ``cross_entropy_loss``, ``mse_loss``, ...), linear algebra, FFTs and padding, but none of ``softmax``,
      ``log_softmax``, ``layer_norm``, ``pow``, ``rsqrt`` or ``exp``: on a CPU those run in their input's dtype.

So a tensor a transformers layer computes in 16 bit and passes to one of CUDA's fp32 ops comes out fp32 on a GPU,
whatever the model's code asks for. Where this changes what a transformers layer saves:

  eager attention's softmax: families whose code calls ``softmax(scores, dim=-1)`` without an upcast (BERT,
      RoBERTa, GPT-2; ``ImplTraits.softmax_in_compute_dtype``) keep 16-bit probabilities without
      autocast, fp32 ones under CUDA autocast (``_softmax`` saves its output for backward: 4 B per element),
      and the probabilities' matmul with v (``lower_precision_fp``) saves autocast's 16-bit cast of them
      (``cached_cast`` of a non-leaf: a fresh copy, not cached): 4 + c per element, as the families that
      upcast themselves (Llama's ``softmax(..., dtype=float32).to(q.dtype)``). With attention dropout the
      dropout runs on the fp32 probabilities: its 1-byte mask is kept, its fp32 output only until the matmul
      casts it (4 + 1 + c). The score's promotion by an fp32 additive mask (BERT at transformers 4.x:
      ``extended_attention_mask`` in the fp32 model's dtype) yields the same fp32 softmax input on any device;
      its sum is a temporary, not saved. The other families of that trait name the softmax's dtype, which
      autocast leaves alone but which is fp32 there too: Falcon's ``hidden_states.dtype`` (the fp32 residual
      stream), gpt-oss's logits after ``torch.cat`` with its fp32 sinks (cat promotes).

  GPT-2's ``gelu_new`` (transformers activations.py NewGELUActivation: ``0.5 * x * (1 + tanh(sqrt(2 / pi) *
      (x + 0.044715 * pow(x, 3))))``): ``pow`` is on CUDA's fp32 list, so it casts the 16-bit x to fp32 and
      keeps that copy (pow.Tensor_Scalar's backward reads self); the sum with x, tanh (which keeps its output)
      and 1 + tanh follow it in fp32; the last product keeps 0.5x (c) and 1 + tanh (4): 4 + 4 + 4 + c per
      intermediate element, where the CPU keeps four c-byte tensors. The product's fp32 output is cast to c by
      the next linear, which keeps that cast as any linear input.

What needs no new rule: LayerNorm under autocast already counts fp32 inputs (activations.py ``_norm``: the
residual stream of an fp32 model is fp32, so the CPU and CUDA agree there), the loss's log_softmax is fp32 on
both devices (CPU's ``cross_entropy_loss`` and ``nll_loss`` are on its fp32 list), and RMSNorm upcasts itself.

The CPU twin (verify/trace.py) reproduces CUDA's rule for the ops listed in ``TWIN_CUDA_RULES`` by registering
CUDA's policy for them on the AutocastCPU key for the traced step, so the traced step and the estimate agree.
"""

from __future__ import annotations

from vramwise.spec.model import ModelSpec

SOURCE = (
    "pytorch aten/src/ATen/autocast_mode.cpp (008ec6b1840c) TORCH_LIBRARY_IMPL(aten, Autocast, m): softmax is "
    "fp32_set_opt_dtype on CUDA (AT_FORALL_FP32_SET_OPT_DTYPE), not on the AutocastCPU list"
)

# CUDA's fp32 ops (AT_FORALL_FP32 and AT_FORALL_FP32_SET_OPT_DTYPE) that transformers' layers call on 16-bit
# tensors, and whether the CPU's list (TORCH_LIBRARY_IMPL(aten, AutocastCPU, m)) has them too.
CUDA_FP32_OPS: dict[str, bool] = {
    "softmax": False,
    "log_softmax": False,
    "layer_norm": False,
    "native_layer_norm": False,
    "pow": False,
    "rsqrt": False,
    "exp": False,
    "nll_loss": True,
    "mse_loss": True,
}

# The rules the CPU twin applies as CUDA does (verify/trace.py ``cuda_autocast_rules``): the aten overload and
# CUDA's policy for it. softmax and pow change saved tensors (module docstring); log_softmax and
# layer_norm are the fp32 the estimate already counts under autocast (loss.py, activations.py ``_norm``,
# encoder.py's head LayerNorm over a 16-bit input).
TWIN_CUDA_RULES: tuple[tuple[str, str], ...] = (
    ("softmax.int", "fp32_set_opt_dtype"),
    ("log_softmax.int", "fp32_set_opt_dtype"),
    ("layer_norm", "fp32"),
    ("pow.Tensor_Scalar", "fp32"),
)

def softmax_fp32(spec: ModelSpec, amp: bool) -> bool:
    """Whether eager attention's softmax output is fp32: the family upcasts it itself, or CUDA autocast runs
    ``softmax`` as fp32_set_opt_dtype (``amp``: fp32 weights under torch.autocast on a GPU)."""
    return amp or not spec.traits.softmax_in_compute_dtype


def cuda_only_fp32(op: str) -> bool:
    """An op CUDA autocast runs in fp32 and CPU autocast runs in its input's dtype (so a CPU trace of an amp
    step cannot show it without the twin's rule)."""
    return op in CUDA_FP32_OPS and not CUDA_FP32_OPS[op]


def gelu_new_amp(c: int) -> int:
    """Bytes gelu_new keeps per intermediate element under CUDA autocast: pow's fp32 copy of x, tanh's fp32
    output, 0.5x in the compute dtype ``c`` and the fp32 1 + tanh (module docstring)."""
    return 4 + 4 + c + 4
