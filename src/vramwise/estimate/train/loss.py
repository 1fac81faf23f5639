"""The loss region: logits, the fp32 cross entropy and its gradient, on the stage that holds the head.

transformers' ForCausalLMLoss upcasts the logits to fp32 and calls cross_entropy: log_softmax keeps its fp32
output (4·V per token) until backward; the 16-bit logits themselves are freed once the loss is computed (the
Trainer keeps only the loss). Backward of log_softmax then holds its saved output, the incoming gradient and
the outgoing one: 12·V per token at once. Measured in cpu-memory-measurement.md §2 (Temp = two fp32
logits-sized tensors on top of the saved one). A chunked (fused linear) cross entropy computes the loss and
the gradient of the hidden states chunk by chunk during forward: only ``chunk`` tokens of logits ever exist.

The other implementations (``--loss``), each from its source:
  compute-dtype      F.cross_entropy on the 16-bit logits (plain PyTorch): aten _log_softmax saves its result
                     (derivatives.yaml: ``self: _log_softmax_backward_data(grad, result, dim, self.scalar_type())``)
                     in the input dtype, c·V; backward holds nll_loss's gradient and log_softmax's, c·V each.
                     Under autocast log_softmax runs in fp32 (autocast's fp32 op list), as the full loss.
                     torchtitan is not this: components/loss.py cross_entropy_loss calls cross_entropy on
                     pred.flatten(0, 1).float() (and its trainer deletes pred before backward): its loss is full.
  torchtune-chunked  torchtune CEWithChunkedOutputLoss (modules/loss/ce_chunked_output_loss.py, v0.6): the model
                     returns 8 chunks of 16-bit logits (TransformerDecoder.chunked_output), each upcast and
                     cross-entropied in turn: every chunk's fp32 log-softmax is saved (4·V per token, as the full
                     loss); the logits live until the recipe's ``del logits`` (forward), and backward runs one
                     chunk at a time (the chunks' loss nodes are newer than the head's matmuls): 8·V x T/8.
  torchtune-linear   torchtune 0.7 LinearCrossEntropyLoss (modules/loss/cross_entropy_loss.py): the model skips its
                     head (skip_output_layer); per chunk of tensor_split(8, dim=1) the loss indexes the hidden
                     states with the bool label mask (aten.index saves that mask, 1 B per token, and the head saves
                     the indexed copy for its weight's gradient, as it would the norm's output), runs the head and
                     cross_entropy(logits.float()): every chunk's fp32 log-softmax is saved, but only one chunk's
                     16-bit logits and fp32 copy exist at a time; backward one chunk at a time as torchtune-chunked,
                     but with the head's weight gradient already accumulating (the head runs per chunk).
  liger              Liger-Kernel LigerFusedLinearCrossEntropyFunction (ops/fused_linear_cross_entropy.py,
                     fused_linear_cross_entropy_forward): gradients computed in forward, chunk by chunk, with
                     chunk = next_power_of_2(ceil(BT / ceil(V / H))) (at most BT): one chunk's logits (c, the
                     gradient written in place) and loss_1d (fp32 per token) in forward; grad_input (BT x H, c) and
                     grad_weight (zeros_like(weight), when the head trains) are saved for backward, which only
                     scales them (LigerFusedLinearCrossEntropyFunction.forward: save_for_backward).
  cce                Apple's Cut Cross Entropy (cut_cross_entropy/cce.py LinearCrossEntropyFunction): no logits;
                     saves e (the head's input), the fp32 log-sum-exp, int32 valid indices (shift=1) and
                     logit_avg (fp32 per vocabulary entry, filter_eps "auto"); backward (cce_backward.py
                     cce_backward_kernel) allocates de = zeros_like(e), dc = zeros_like(c) when the head trains,
                     and sorts logit_avg (argsort int64, then int32).
  compiled           the full loss under torch.compile: torchtitan components/loss.py build_cross_entropy_loss
                     (commit e7c0cae: ``if job_config.training.compile: loss_fn = torch.compile(loss_fn)``) over
                     cross_entropy_loss (cross_entropy of pred.flatten(0, 1).float()). Inductor fuses the upcast,
                     log-softmax and nll: forward saves the 16-bit logits themselves (the graph's input, kept past
                     the trainer's ``del pred``) and two fp32 values per token (row max, log-sum-exp), and
                     allocates no logits-sized buffer; backward writes the logits' gradient once, in the logits'
                     dtype. Read from inductor's generated code (torch 2.13, CPU: the forward's buffers are
                     (T, 1) fp32, the backward's one (T, V) bf16) and the graph's saved tensors.
  loss-parallel      torch.distributed.tensor.parallel loss_parallel (torch 2.13 distributed/tensor/parallel/
                     loss.py), which torchtitan wraps its loss in under tensor parallelism (9dec370 train.py
                     get_train_context(loss_parallel_enabled)): on this rank's vocabulary shard V, _log_softmax
                     computes shifted = x - max and exp(shifted) beside the fp32 upcast x and the 16-bit logits
                     (forward: c·V + 12·V at once), and saves its fp32 result (4·V);
                     _nll_loss_and_log_softmax_backward builds grad_input = zeros_like(x), then
                     (grad_input + exp(x)) * grad_output: three fp32 tensors beside the saved one (12·V).
"""

from __future__ import annotations

from dataclasses import dataclass

from vramwise.estimate.plan import BATCH, LOSS_CHUNK, ONE, TOKENS, Rule

SOURCE = "transformers ForCausalLMLoss (fp32 upcast + cross_entropy); traced, notes §2"
CHUNKED = "chunked / fused linear cross entropy (Liger-style)"


SRC_COMPUTE_DTYPE = "F.cross_entropy on the compute-dtype logits (aten _log_softmax saves its result)"
SRC_TORCHTUNE = "torchtune CEWithChunkedOutputLoss, 8 chunks (modules/loss/ce_chunked_output_loss.py)"
SRC_TORCHTUNE_LINEAR = "torchtune 0.7 LinearCrossEntropyLoss, 8 chunks (modules/loss/cross_entropy_loss.py)"
SRC_LIGER = "Liger-Kernel fused_linear_cross_entropy_forward (ops/fused_linear_cross_entropy.py)"
SRC_CCE = "Apple Cut Cross Entropy LinearCrossEntropyFunction (cut_cross_entropy/cce.py, cce_backward.py)"
SRC_LOSS_PARALLEL = (
    "torch 2.13 torch/distributed/tensor/parallel/loss.py _log_softmax, _nll_loss_and_log_softmax_backward "
    "(loss_parallel, torchtitan's loss under tp)"
)
SRC_COMPILED = (
    "torchtitan components/loss.py build_cross_entropy_loss (e7c0cae): torch.compile(cross_entropy_loss); "
    "inductor's fused kernels (generated code read, torch 2.13)"
)
TORCHTUNE_CHUNKS = 8  # CEWithChunkedOutputLoss.num_output_chunks


def liger_chunk(tokens: int, vocab: int, h: int) -> int:
    """Liger's chunk of tokens: next_power_of_2(ceil(BT / ceil(V / H))), at most BT (chunk_mem_const 1)."""
    inc = -(-vocab // h)
    per = -(-tokens // inc)
    return min(1 << max(0, (per - 1).bit_length()), tokens)


@dataclass(frozen=True, kw_only=True)
class LossRules:
    """The loss region: what is saved until backward, what the loss backward adds, and what only the forward
    holds at its end (torchtune's logits until ``del logits``)."""

    saved: tuple[Rule, ...]
    backward: tuple[Rule, ...]
    forward: tuple[Rule, ...] = ()
    # a later moment of the loss backward, once the loss's saved tensors are released: a chunked head's matmuls
    # (torchtune's compiled chunked loss), each chunk's weight gradient added in place into the accumulated one
    head_chunks: tuple[Rule, ...] = ()
    # forward's end only, as ``forward``, and replayed by the allocator model in their order (allocated before the
    # saved log-softmax, freed before backward: torchtitan_upcast); ``forward``'s order is not replayed
    forward_replayed: tuple[Rule, ...] = ()
    # in every phase of the step: a training loop that keeps its logits until the next forward returns (LitGPT's
    # fp32 list, litgpt_code.py litgpt_loss_rules)
    kept: tuple[Rule, ...] = ()


def implementation_rules(
    *, vocab: int, h: int, c: int, loss: str, flight: float, softcap: bool, head: int, amp: bool, compiled: bool = False
) -> LossRules:
    """The loss region of ``loss`` (any implementation): ``head`` is the bytes of the head's weight gradient
    when the head trains (0 when frozen), ``amp`` whether autocast runs the loss, ``compiled`` whether
    torch.compile runs it (torchtune's compile=True compiles CEWithChunkedOutputLoss.compute_cross_entropy)."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    if loss in ("full", "chunked"):
        saved, temp = loss_rules(vocab=vocab, h=h, c=c, loss=loss, flight=flight, softcap=softcap)
        return LossRules(saved=(saved,), backward=(temp,))
    if loss == "compute-dtype":
        return _compute_dtype(vocab, 4 if amp else c, c, many, flight, softcap)
    if loss == "torchtune-chunked" and compiled and not softcap:
        return _torchtune_compiled(vocab, h, c, many, flight, head)
    if loss == "torchtune-chunked":
        return _torchtune(vocab, h, c, many, flight, softcap, head)
    if loss == "torchtune-linear":
        return _torchtune_linear(vocab, c, many, flight, softcap, head)
    if loss == "liger":
        return _liger(vocab, h, c, many, flight, head)
    if loss == "compiled":
        return _compiled(vocab, c, many, flight, softcap)
    if loss == "loss-parallel":
        return _loss_parallel(vocab, c, many, flight)
    return _cce(vocab, h, c, many, flight, head)


def _softcap(vocab: int, c: int, many: str, flight: float) -> tuple[Rule, ...]:
    return (
        Rule(
            name="activations/loss",
            coef=c * vocab * flight,
            var=TOKENS,
            formula=lambda v: f"tanh of the soft-capped logits: T {v.T} x V {vocab} x {c} B{many}",
            source="Gemma 2 final_logit_softcapping",
        ),
    )


def _compute_dtype(vocab: int, lc: int, c: int, many: str, flight: float, softcap: bool) -> LossRules:
    what = "fp32 (autocast runs log_softmax in fp32)" if lc != c else f"the compute dtype ({lc} B)"
    saved = Rule(
        name="activations/loss",
        coef=lc * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"log-softmax in {what}: T {v.T} x V {vocab} x {lc} B{many}",
        source=SRC_COMPUTE_DTYPE,
    )
    temp = Rule(
        name="loss/backward",
        coef=2 * lc * vocab,
        var=TOKENS,
        formula=lambda v: f"incoming and outgoing gradients of log-softmax: 2 x T {v.T} x V {vocab} x {lc} B",
        source=SRC_COMPUTE_DTYPE,
        tensors=2,
    )
    return LossRules(saved=(saved, *(_softcap(vocab, c, many, flight) if softcap else ())), backward=(temp,))


def _loss_parallel(vocab: int, c: int, many: str, flight: float) -> LossRules:
    saved = Rule(
        name="activations/loss",
        coef=4 * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"fp32 log-softmax of this rank's vocabulary shard: T {v.T} x V {vocab} x 4 B{many}",
        source=SRC_LOSS_PARALLEL,
    )
    forward = Rule(
        name="loss/logits",
        coef=(c + 8) * vocab,
        var=TOKENS,
        formula=lambda v: f"the {c}-byte logits, the fp32 upcast and the shifted logits (their exp stands where the "
        f"saved result will): T {v.T} x V {vocab} x ({c} + 8) B",
        source=SRC_LOSS_PARALLEL,
    )
    temp = Rule(
        name="loss/backward",
        coef=12 * vocab,
        var=TOKENS,
        formula=lambda v: f"zeros_like, grad_input + exp(x) and its product with the loss gradient, fp32: "
        f"3 x T {v.T} x V {vocab} x 4 B",
        source=SRC_LOSS_PARALLEL,
    )
    return LossRules(saved=(saved,), backward=(temp,), forward=(forward,))


def _compiled(vocab: int, c: int, many: str, flight: float, softcap: bool) -> LossRules:
    saved = Rule(
        name="activations/loss",
        coef=(c * vocab + 2 * 4) * flight,
        var=TOKENS,
        formula=lambda v: f"the {c}-byte logits the compiled loss saves, and its fp32 row max and log-sum-exp: "
        f"T {v.T} x (V {vocab} x {c} B + 2 x 4 B){many}",
        source=SRC_COMPILED,
    )
    temp = Rule(
        name="loss/backward",
        coef=c * vocab,
        var=TOKENS,
        formula=lambda v: f"the logits' gradient, written once in their dtype: T {v.T} x V {vocab} x {c} B",
        source=SRC_COMPILED,
    )
    return LossRules(saved=(saved, *(_softcap(vocab, c, many, flight) if softcap else ())), backward=(temp,))


def _torchtune(vocab: int, h: int, c: int, many: str, flight: float, softcap: bool, head: int) -> LossRules:
    n = TORCHTUNE_CHUNKS
    saved = Rule(
        name="activations/loss",
        coef=4 * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"fp32 log-softmax of all {n} chunks: T {v.T} x V {vocab} x 4 B{many}",
        source=SRC_TORCHTUNE,
    )
    logits = Rule(
        name="loss/logits",
        coef=c * vocab + 4 * vocab / n,
        var=TOKENS,
        formula=lambda v: f"the {n} logit chunks until the recipe's del logits: T {v.T} x V {vocab} x {c} B, "
        f"+ one chunk's fp32 upcast: T/{n} x V x 4 B",
        source=SRC_TORCHTUNE + "; recipes' forward: del logits before backward",
    )
    temp = Rule(
        name="loss/backward",
        coef=8 * vocab / n,
        var=TOKENS,
        formula=lambda v: f"one chunk's incoming and outgoing fp32 gradients: 2 x T {v.T}/{n} x V {vocab} x 4 B",
        source=SRC_TORCHTUNE,
        tensors=2,
    )
    caps = _softcap(vocab, c, many, flight) if softcap else ()
    # the chunks' loss nodes leave each chunk's logits gradient in the logits' dtype (the upcast's backward casts
    # it back), as the compiled ones do: the head's chunked matmuls then follow as there
    chunks = _head_chunks(vocab, h, c, head) if head and not softcap else ()
    return LossRules(saved=(saved, *caps), backward=(temp,), forward=(logits,), head_chunks=chunks)


# torchtune 0.3-0.6 training/_compile.py compile_loss: with compile=True only
# CEWithChunkedOutputLoss.compute_cross_entropy (cross_entropy(logits.float(), ...)) is compiled. Inductor's
# partitioner then saves each chunk's 16-bit logits and two fp32 values per row (the row max and log-sum-exp)
# instead of the fp32 log-softmax, and fuses the upcast: traced on torch 2.13's CPU inductor
# (bench/compile_loss_saved.py -> bench/data/compile/loss-saved-cpu.json, checked by
# tests/estimate/test_torchtune_bench.py: 2 B x V + 8 B per row saved, eager 4 B x V). The saved logits outlive the
# recipe's del logits. Backward: autograd runs the 8 chunks' loss nodes (newer) before the head's matmuls, each
# turning its saved chunk into a logits gradient of the same size; then the head's matmul per chunk accumulates the
# head's weight gradient while those gradients are still held.
SRC_TORCHTUNE_COMPILED = SRC_TORCHTUNE + " compiled (training/_compile.py compile_loss); inductor's saved tensors"


def _torchtune_compiled(vocab: int, h: int, c: int, many: str, flight: float, head: int) -> LossRules:
    n = TORCHTUNE_CHUNKS
    saved = Rule(
        name="activations/loss",
        coef=(c * vocab + 8) * flight,
        var=TOKENS,
        formula=lambda v: f"the {n} chunks' logits, saved by the compiled cross entropy, + fp32 max and "
        f"log-sum-exp: T {v.T} x (V {vocab} x {c} B + 8 B){many}",
        source=SRC_TORCHTUNE_COMPILED,
    )
    if not head:
        temp = Rule(
            name="loss/backward",
            coef=c * vocab / n,
            var=TOKENS,
            formula=lambda v: f"one chunk's logits gradient beside the saved chunks: T {v.T}/{n} x V {vocab} x {c} B",
            source=SRC_TORCHTUNE_COMPILED,
        )
        return LossRules(saved=(saved,), backward=(temp,))
    grads = (
        Rule(
            name="loss/head_grad",
            coef=head,
            var=ONE,
            formula=lambda _: f"the head's weight gradient, accumulated chunk by chunk beside the {n} chunks' logits "
            f"gradients: {head:,} B",
            source=SRC_TORCHTUNE_COMPILED,
        ),
        Rule(
            name="loss/backward",
            coef=c * h / n,
            var=TOKENS,
            formula=lambda v: f"one chunk's hidden-state gradient: T {v.T}/{n} x h {h} x {c} B",
            source=SRC_TORCHTUNE_COMPILED,
        ),
    )
    return LossRules(saved=(saved,), backward=grads, head_chunks=_head_chunks(vocab, h, c, head))


# The head's chunked matmuls' backward, newest chunk first (the chunks' loss nodes, created after them, all ran
# before). torch autograd input_buffer.cpp accumulate: a gradient reaching an input that already holds one is added
# in place (``old_var.add_(var)``) only when the buffer holds its last reference (can_accumulate_inplace: use_count 1,
# storage use_count 1); the first chunk's weight gradient is the transpose view mm_mat2_backward returns for the
# head's ``weight.t()`` (``grad.t().mm(mat1).t()``, FunctionsManual.cpp), whose base shares its storage, so the second
# chunk's is added out of place (``old_var + var``): three weight-sized gradients at once, the later chunks in place.
# By then the matmul's input, the second chunk's logits gradient, is released: n - 2 chunks' logits gradients are
# held, and two chunks' hidden-state gradients (the first waits in the chunk split's input buffer). Traced without a
# dispatch mode (torch.profiler's CPU memory events: one add, then add_; tests/estimate/test_head_chunks.py).
SRC_HEAD_CHUNKS = SRC_TORCHTUNE_COMPILED + "; torch autograd input_buffer.cpp accumulate, mm_mat2_backward"


def _head_chunks(vocab: int, h: int, c: int, head: int) -> tuple[Rule, ...]:
    n = TORCHTUNE_CHUNKS
    return (
        Rule(
            name="loss/logits_grads",
            coef=c * vocab * (n - 2) / n,
            var=TOKENS,
            formula=lambda v: f"the {n - 2} chunks' logits gradients not yet consumed: T {v.T} x {n - 2}/{n} x V "
            f"{vocab} x {c} B",
            source=SRC_HEAD_CHUNKS,
        ),
        Rule(
            name="loss/head_grad",
            coef=3 * head,
            var=ONE,
            formula=lambda _: f"the head's weight gradient from the first chunk (a transpose view: added out of "
            f"place), the second chunk's and their sum: 3 x {head:,} B",
            source=SRC_HEAD_CHUNKS,
        ),
        Rule(
            name="loss/backward",
            coef=2 * c * h / n,
            var=TOKENS,
            formula=lambda v: f"two chunks' hidden-state gradients: 2 x T {v.T}/{n} x h {h} x {c} B",
            source=SRC_HEAD_CHUNKS,
        ),
    )


def _torchtune_linear(vocab: int, c: int, many: str, flight: float, softcap: bool, head: int) -> LossRules:
    n = TORCHTUNE_CHUNKS
    saved = Rule(
        name="activations/loss",
        coef=(4 * vocab + 1) * flight,
        var=TOKENS,
        formula=lambda v: f"fp32 log-softmax of all {n} chunks: T {v.T} x V {vocab} x 4 B, + the bool label mask "
        f"T x 1 B{many}",
        source=SRC_TORCHTUNE_LINEAR,
    )
    logits = Rule(
        name="loss/logits",
        coef=(c + 4) * vocab / n,
        var=TOKENS,
        formula=lambda v: f"one chunk's logits and their fp32 upcast: T {v.T}/{n} x V {vocab} x ({c} + 4) B",
        source=SRC_TORCHTUNE_LINEAR,
    )
    temp = Rule(
        name="loss/backward",
        coef=8 * vocab / n,
        var=TOKENS,
        formula=lambda v: f"one chunk's incoming and outgoing fp32 gradients: 2 x T {v.T}/{n} x V {vocab} x 4 B",
        source=SRC_TORCHTUNE_LINEAR,
    )
    caps = _softcap(vocab, c, many, flight) if softcap else ()
    # the head runs inside each chunk, so its weight's gradient is summed chunk by chunk from the first chunk's
    # backward on, while the other chunks' log-softmax are still saved (autograd's input buffer of the weight)
    grad = (
        Rule(
            name="loss/head_grad",
            coef=head,
            var=ONE,
            formula=lambda _: f"the head's weight gradient, accumulated from the first chunk's backward: {head:,} B",
            source=SRC_TORCHTUNE_LINEAR,
        ),
    )
    return LossRules(saved=(saved, *caps), backward=(temp, *(grad if head else ())), forward=(logits,))


def _liger(vocab: int, h: int, c: int, many: str, flight: float, head: int) -> LossRules:
    saved = [
        Rule(
            name="activations/loss",
            coef=c * h * flight,
            var=TOKENS,
            formula=lambda v: f"grad_input, computed in forward: T {v.T} x h {h} x {c} B{many}",
            source=SRC_LIGER,
        )
    ]
    if head:
        saved.append(
            Rule(
                name="loss/head_grad",
                coef=head,
                var=ONE,
                formula=lambda _: f"grad_weight = zeros_like(lm_head weight): {head:,} B, computed in forward",
                source=SRC_LIGER,
            )
        )
    chunk = Rule(
        name="loss/logits",
        coef=c * vocab,
        var=LOSS_CHUNK,
        formula=lambda v: f"one chunk's logits (gradient in place): {v.chunk} tokens "
        f"(next_power_of_2(ceil(T / ceil(V / h)))) x V {vocab} x {c} B",
        source=SRC_LIGER,
    )
    per_token = Rule(
        name="loss/per_token_loss",
        coef=4,
        var=TOKENS,
        formula=lambda v: f"fp32 loss_1d until its sum: T {v.T} x 4 B",
        source=SRC_LIGER,
    )
    return LossRules(saved=tuple(saved), backward=(), forward=(chunk, per_token))


def _cce(vocab: int, h: int, c: int, many: str, flight: float, head: int) -> LossRules:
    saved = (
        Rule(
            name="activations/loss",
            coef=(4 + 4) * flight,
            var=TOKENS,
            formula=lambda v: f"fp32 log-sum-exp + int32 valid index: T {v.T} x 8 B{many}",
            source=SRC_CCE,
        ),
        Rule(
            name="loss/logit_avg",
            coef=4 * vocab,
            var=ONE,
            formula=lambda _: f"logit_avg (filter_eps auto): V {vocab} x 4 B",
            source=SRC_CCE,
        ),
    )
    backward = [
        Rule(
            name="loss/backward",
            coef=c * h,
            var=TOKENS,
            formula=lambda v: f"de = zeros_like(e): T {v.T} x h {h} x {c} B",
            source=SRC_CCE,
        ),
        Rule(
            name="loss/vocab_ordering",
            coef=12 * vocab,
            var=ONE,
            formula=lambda _: f"argsort(logit_avg) int64 then int32: V {vocab} x (8 + 4) B",
            source=SRC_CCE,
        ),
    ]
    if head:
        backward.append(
            Rule(
                name="loss/head_grad",
                coef=head,
                var=ONE,
                formula=lambda _: f"dc = zeros_like(lm_head weight): {head:,} B",
                source=SRC_CCE,
            )
        )
    return LossRules(saved=saved, backward=tuple(backward))


def loss_rules(*, vocab: int, h: int, c: int, loss: str, flight: float, softcap: bool = False) -> tuple[Rule, Rule]:
    """(saved until backward, extra during the loss backward) per token on this GPU; the saved part for every
    micro-batch in flight."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    if loss == "chunked":
        saved = Rule(
            name="activations/loss",
            coef=h * c * flight,
            var=TOKENS,
            formula=lambda v: f"gradient of the hidden states computed in forward: T {v.T} x h {h} x {c} B{many}",
            source=CHUNKED,
        )
        temp = Rule(
            name="loss/backward",
            coef=12 * vocab,
            var=LOSS_CHUNK,
            formula=lambda v: f"one chunk: 12 B x {v.chunk} tokens x V {vocab} (fp32 logits, log-softmax, gradient)",
            source=CHUNKED,
        )
        return saved, temp
    per = 4 + (c if softcap else 0)
    capped = f" + tanh of the soft-capped logits x {c} B" if softcap else ""
    saved = Rule(
        name="activations/loss",
        coef=per * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"fp32 log-softmax: T {v.T} x V {vocab} x 4 B{capped}{many}",
        source=SOURCE + ("; Gemma 2 final_logit_softcapping" if softcap else ""),
    )
    temp = Rule(
        name="loss/backward",
        coef=8 * vocab,
        var=TOKENS,
        formula=lambda v: f"incoming and outgoing fp32 gradients of log-softmax: 2 x T {v.T} x V {vocab} x 4 B",
        source=SOURCE,
        tensors=2,
    )
    return saved, temp


# torchtitan's trainer before its loss module (9dec370, the end-2024 benchmarks'): train.py loss_fn is
# ``cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))`` and the step runs ``pred = model(input_ids);
# loss = loss_fn(pred, labels); del pred; loss.backward()``: the head's 16-bit output and its fp32 copy exist
# beside the log-softmax when it is computed, and both are freed before backward (log_softmax saves its result,
# the upcast saves nothing: derivatives.yaml). Their blocks lie below the saved log-softmax, free while the loss
# backward's two fp32 gradients look for room: one fits where the copy was, the 16-bit logits' block is too small
# for the other (estimate/train/allocation.py replays that order).
SRC_TORCHTITAN_LOSS = "torchtitan 9dec370 train.py loss_fn (pred.flatten(0, 1).float()) and the step's del pred"


def torchtitan_upcast(vocab: int, c: int, flight: float) -> tuple[Rule, Rule]:
    """The full loss's forward-only tensors under torchtitan's 9dec370 trainer: the head's c-byte logits and their
    fp32 copy, per token (forward's end only)."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    logits = Rule(
        name="loss/logits",
        coef=c * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"the head's output pred until del pred: T {v.T} x V {vocab} x {c} B{many}",
        source=SRC_TORCHTITAN_LOSS,
    )
    upcast = Rule(
        name="loss/logits_fp32",
        coef=4 * vocab * flight,
        var=TOKENS,
        formula=lambda v: f"pred.float(), log_softmax's input: T {v.T} x V {vocab} x 4 B{many}",
        source=SRC_TORCHTITAN_LOSS,
    )
    return logits, upcast


CLASSIFIER = (
    "transformers loss_utils: ForTokenClassification (.float() then cross_entropy) and "
    "ForSequenceClassificationLoss (cross_entropy of the pooled (b, num_labels) logits)"
)


def classifier_loss_rules(*, labels: int, per_sequence: bool, flight: float) -> tuple[Rule, Rule]:
    """A classifier's loss: the log-softmax over ``labels`` outputs saved until backward, and its backward's two
    gradients, per token (token classification) or per sequence (sequence classification: only the pooled row
    enters the loss). fp32 throughout: ForTokenClassification upcasts; the pooled logits of a sequence
    classifier enter cross_entropy in the compute dtype, which autocast runs in fp32 (4 B counted either way:
    at most 2 B per label and sequence above a pure 16-bit run)."""
    many = f" x {flight:g} micro-batches" if flight != 1 else ""
    var, rows = (BATCH, "b") if per_sequence else (TOKENS, "T")
    saved = Rule(
        name="activations/loss",
        coef=4 * labels * flight,
        var=var,
        formula=lambda v: f"fp32 log-softmax: {rows} {v.b if per_sequence else v.T} x labels {labels} x 4 B{many}",
        source=CLASSIFIER,
    )
    temp = Rule(
        name="loss/backward",
        coef=8 * labels,
        var=var,
        formula=lambda v: (
            f"incoming and outgoing fp32 gradients: 2 x {rows} {v.b if per_sequence else v.T} x labels {labels} x 4 B"
        ),
        source=CLASSIFIER,
    )
    return saved, temp
