"""The seeds' training formulas, exactly as written, as Terms.

Seed 000 (mixed precision, one GPU): model ``6Φ`` (fp16 copy + fp32 master), activations with gradient
checkpointing ``2·t·h·L`` (t = tokens in the batch), gradients ``4Φ_trainable``, optimizer
``K_opt·Φ_trainable`` with K_opt = 12 (Adam), 8 (SGD with momentum), 4 (SGD).
Seed 002 (Zhihu p/648924115): model states ``(2 + 2 + K)Φ`` with K = 12 (AdamW), 8 (SGD momentum),
6 (bitsandbytes 8-bit), 0 (LOMO); ZeRO-1/2/3; activations per layer ``34sbh + 5as²b`` (Korthikanti et al.
2022, arXiv:2205.05198) and their recompute / TP / SP / PP variants.

Where the seeds double count, this module still reproduces them; ``SEED_000_CAVEATS`` says what a real
framework allocates instead (the accurate training estimator is ``estimate/train/training.py``). The functions take
plain numbers; ``estimate/train/textbook_mode.py`` applies them to a model and a TrainSetup.
"""

from __future__ import annotations

from vramwise.errors import InvalidLayoutError, InvalidWorkloadError
from vramwise.estimate.term import Term
from vramwise.workload import Recompute

SEED_000 = "seed 000 (Transformer 模型的記憶體使用量估算, 2024)"
SEED_002 = "seed 002 (Zhihu p/648924115, after Korthikanti et al. 2022 and ZeRO, Rajbhandari et al. 2020)"

SEED_000_OPTIMIZER_BYTES = {"sgd": 4, "sgd-momentum": 8, "adam": 12}
SEED_002_K = {"adamw": 12, "sgd-momentum": 8, "adamw-8bit": 6, "lomo": 0}

SEED_000_CAVEATS = (
    "seed 000 counts the fp32 master copy twice: in 'model' (6 = 2 + 4 bytes) and inside Adam's 12 bytes "
    "(master 4 + m 4 + v 4); mixed-precision AdamW really holds 2 + 4 + 8 bytes plus 2 or 4 for gradients",
    "seed 000 gives the frozen LoRA base an fp32 master copy too (Φ x 1.02 x 6); frozen weights have none",
    "seed 000 truncates each term to two decimals of GiB and adds the truncated values "
    "(46.67 and 158.25 GiB; exact bytes give 46.68 and 158.27)",
)


def seed000_training_terms(
    *, params: float, trainable_fraction: float, tokens: int, hidden: int, layers: int, optimizer: str = "adam"
) -> tuple[Term, ...]:
    """Seed 000's four terms: model, activations (with gradient checkpointing), gradients, optimizer."""
    if optimizer not in SEED_000_OPTIMIZER_BYTES:
        raise InvalidWorkloadError(
            f"optimizer '{optimizer}' is not in seed 000's table; allowed: {', '.join(SEED_000_OPTIMIZER_BYTES)}"
        )
    if not 0 < trainable_fraction <= 1:
        raise InvalidWorkloadError(f"trainable fraction must be in (0, 1], got {trainable_fraction}")
    # LoRA adds its adapters on top of the frozen base: Φ x (1 + fraction); full fine-tuning trains Φ itself.
    lora = trainable_fraction < 1
    model_params = params * (1 + trainable_fraction) if lora else params
    trainable = params * trainable_fraction
    k = SEED_000_OPTIMIZER_BYTES[optimizer]
    return (
        Term(
            name="model",
            bytes=round(model_params * 6),
            formula=f"{model_params:,.0f} x 6 B (fp16 2 + fp32 master 4)" + (" [Φ x (1 + LoRA)]" if lora else ""),
            source=f"{SEED_000} eq. (1)",
        ),
        Term(
            name="activations",
            bytes=2 * tokens * hidden * layers,
            formula=f"2 x t {tokens} x h {hidden} x L {layers} (gradient checkpointing)",
            source=f"{SEED_000} eq. (2)",
        ),
        Term(
            name="gradients",
            bytes=round(trainable * 4),
            formula=f"{trainable:,.0f} trainable x 4 B",
            source=f"{SEED_000} eq. (3)",
        ),
        Term(
            name="optimizer",
            bytes=round(trainable * k),
            formula=f"{trainable:,.0f} trainable x {k} B ({optimizer})",
            source=f"{SEED_000} eq. (4)",
        ),
    )


def seed002_model_states(*, params: float, optimizer: str = "adamw", zero: int = 0, dp: int = 1) -> Term:
    """``(2 + 2 + K)Φ`` per GPU, partitioned by ZeRO stage 1 (optimizer), 2 (+ gradients), 3 (+ parameters)."""
    if optimizer not in SEED_002_K:
        raise InvalidWorkloadError(
            f"optimizer '{optimizer}' is not in seed 002's K table; allowed: {', '.join(SEED_002_K)}"
        )
    if zero not in (0, 1, 2, 3):
        raise InvalidLayoutError(f"zero stage must be 0, 1, 2 or 3, got {zero}")
    if dp < 1 or (zero and dp == 1):
        raise InvalidLayoutError(f"ZeRO stage {zero} partitions over data-parallel GPUs: dp must be >= 2, got {dp}")
    k, n = SEED_002_K[optimizer], dp
    per_param, formula = {
        0: (2 + 2 + k, f"(2 + 2 + {k})Φ"),
        1: (2 + 2 + k / n, f"(2 + 2 + {k}/{n})Φ"),
        2: (2 + (2 + k) / n, f"(2 + (2 + {k})/{n})Φ"),
        3: ((2 + 2 + k) / n, f"(2 + 2 + {k})Φ/{n}"),
    }[zero]
    return Term(
        name="model_states",
        bytes=round(params * per_param),
        formula=f"{formula} = {per_param:g} x {params:,.0f}",
        source=f"{SEED_002} §1-1, §2-2",
    )


def korthikanti_activations(
    *,
    s: int,
    b: int,
    h: int,
    a: int,
    layers: int,
    recompute: Recompute = Recompute.NONE,
    tp: int = 1,
    sequence_parallel: bool = False,
    pp: int = 1,
    interleave: int = 1,
) -> Term:
    """Activations of all ``layers`` (16-bit, with dropout masks) on the most loaded GPU.

    Per layer: none ``34sbh + 5as²b``; selective (attention core recomputed) ``34sbh``; full ``2sbh`` (the
    layer input only); TP ``sbh(10 + 24/t + 5as/(ht))``; TP+SP ``sbh/t·(34 + 5as/h)``. With 1F1B pipelining the
    first stage holds L layers' worth whatever p is; the interleaved schedule multiplies it by
    ``1 + (p − 1)/(p·m)`` for m model chunks per stage.
    """
    if tp < 1 or pp < 1 or interleave < 1:
        raise InvalidLayoutError(f"tp, pp and interleave must be >= 1, got {tp}, {pp}, {interleave}")
    if pp > layers:
        raise InvalidLayoutError(f"pp ({pp}) cannot exceed the number of layers ({layers})")
    if a % tp:
        raise InvalidLayoutError(f"tp ({tp}) must divide the attention heads ({a})")
    sbh, s2 = s * b * h, 5 * a * s * s * b
    if recompute == "full":
        per_layer, f = 2 * sbh / (tp if sequence_parallel else 1), "2sbh" + ("/t" if sequence_parallel else "")
    elif sequence_parallel:
        keep_s2 = recompute == "none"
        per_layer = (34 * sbh + (s2 if keep_s2 else 0)) / tp
        f = "sbh/t·(34 + 5as/h)" if keep_s2 else "34sbh/t"
    elif tp > 1:
        per_layer = 10 * sbh + 24 * sbh / tp + (s2 / tp if recompute == "none" else 0)
        f = "sbh(10 + 24/t + 5as/(ht))" if recompute == "none" else "sbh(10 + 24/t)"
    else:
        per_layer = 34 * sbh + (s2 if recompute == "none" else 0)
        f = "34sbh + 5as²b" if recompute == "none" else "34sbh"
    factor = 1 + (pp - 1) / (pp * interleave) if interleave > 1 else 1
    total = per_layer * layers * factor
    return Term(
        name="activations",
        bytes=round(total),
        formula=f"L {layers} x [{f}] with s {s}, b {b}, h {h}, a {a}, t {tp}"
        + (f" x (1 + (p - 1)/(p·m)) = {factor:.4g}" if interleave > 1 else ""),
        source=f"{SEED_002} §1-2, §3; Korthikanti et al. 2022 Table 2 and eq. (5)",
    )
