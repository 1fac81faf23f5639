"""Textbook mode for training: the seeds' formulas (``estimate/textbook/training.py``) applied to a model and
a TrainSetup.

Seed 000 covers one GPU with full fine-tuning or LoRA (a trainable fraction of Φ); seed 002 covers full
training with ZeRO, tensor/sequence/pipeline parallelism and Korthikanti's activations. A setup either seed
cannot express is an error rather than a silently different formula.
"""

from __future__ import annotations

from dataclasses import replace

from vramwise.errors import InvalidWorkloadError
from vramwise.estimate.encoder_decoder import refuse as refuse_encoder_decoder
from vramwise.estimate.positions import training_positions
from vramwise.estimate.ssm_state import refuse_training
from vramwise.estimate.term import Estimate, Term
from vramwise.estimate.textbook import seed_param_formula
from vramwise.estimate.textbook.training import (
    SEED_000_CAVEATS,
    SEED_002,
    korthikanti_activations,
    seed000_training_terms,
    seed002_model_states,
)
from vramwise.estimate.train.knobs import refuse_textbook_knobs
from vramwise.estimate.train.layout import padded_vocab
from vramwise.spec.load import BareModel, Model
from vramwise.spec.params import total_params
from vramwise.workload import PeftMethod, Recompute, Seed, TrainSetup

_SEED_000_OPTIMIZER = {"adam": "adam", "adamw": "adam", "sgd": "sgd", "sgd-momentum": "sgd-momentum"}
_SEED_002_OPTIMIZER = {
    "adam": "adamw",
    "adamw": "adamw",
    "sgd-momentum": "sgd-momentum",
    "adamw-8bit": "adamw-8bit",
    "lomo": "lomo",
}
_NEEDS_ARCH = "activations need the architecture (hidden size, layers, heads): name a catalog model or a config.json"


def _seed_optimizer(setup: TrainSetup, table: dict[str, str]) -> str:
    name = setup.optimizer.name
    if name not in table:
        raise InvalidWorkloadError(
            f"optimizer '{name}' has no seed {setup.textbook.seed} formula; allowed: {', '.join(table)}"
        )
    return table[name]


def _seed000(model: Model, setup: TrainSetup) -> Estimate:
    if setup.gpus > 1 or setup.parallel.zero:
        raise InvalidWorkloadError("seed 000's formulas are for one GPU: use --seed 002 for ZeRO, tp or pp")
    if setup.peft.method not in (PeftMethod.NONE, PeftMethod.LORA, PeftMethod.QLORA):
        raise InvalidWorkloadError(
            f"seed 000 has a LoRA formula only, not one for {setup.peft.method}: use --mode accurate",
            field="peft",
            allowed="none, lora or qlora in textbook mode",
        )
    optimizer = _seed_optimizer(setup, _SEED_000_OPTIMIZER)
    params = model.params if isinstance(model, BareModel) else total_params(model)
    fraction = setup.textbook.lora_fraction if setup.peft.adapters else 1.0
    if isinstance(model, BareModel):
        terms = seed000_training_terms(
            params=params, trainable_fraction=fraction, tokens=1, hidden=0, layers=0, optimizer=optimizer
        )
        return Estimate(
            persistent=tuple(t for t in terms if t.name != "activations"),
            missing=(_NEEDS_ARCH,),
            notes=SEED_000_CAVEATS,
        )
    terms = seed000_training_terms(
        params=params,
        trainable_fraction=fraction,
        tokens=setup.batch * setup.seq,
        hidden=model.hidden_size,
        layers=model.num_layers,
        optimizer=optimizer,
    )
    notes = list(SEED_000_CAVEATS)
    if setup.recompute != Recompute.FULL:
        notes.append("seed 000's activation term assumes gradient checkpointing (2·t·h·L) whatever --recompute says")
    return Estimate(persistent=terms, notes=tuple(notes))


def _seed002(model: Model, setup: TrainSetup) -> Estimate:
    if setup.peft.method != PeftMethod.NONE:
        raise InvalidWorkloadError("seed 002 has no LoRA formula: use --seed 000 for LoRA in textbook mode")
    optimizer = _seed_optimizer(setup, _SEED_002_OPTIMIZER)
    par = setup.parallel
    if isinstance(model, BareModel):
        if par.tp > 1 or par.pp > 1:
            raise InvalidWorkloadError("seed 002's tp/pp parameter split needs the architecture, not a bare size")
        states = seed002_model_states(params=model.params, optimizer=optimizer, zero=par.zero, dp=par.dp)
        return Estimate(persistent=(states,), missing=(_NEEDS_ARCH,))
    h, L, V = model.hidden_size, model.num_layers, model.vocab_size
    t, p = par.tp, par.pp
    if t > 1 or p > 1:
        vp = padded_vocab(V, t)
        params = vp * h / t + (12 * h * h + 13 * h) * L / (t * p)
        pf = f"V' {vp} x h {h} / t {t} + (12h² + 13h) x L {L} / (t {t} x p {p})"
    else:
        params = seed_param_formula(V, h, L)
        pf = f"Vh + L(12h² + 13h) with V {V}, h {h}, L {L}"
    states = seed002_model_states(params=params, optimizer=optimizer, zero=par.zero, dp=par.dp)
    states = Term(name=states.name, bytes=states.bytes, formula=f"{states.formula}; Φ = {pf}", source=states.source)
    acts = korthikanti_activations(
        s=setup.seq,
        b=setup.batch,
        h=h,
        a=model.attention.num_heads,
        layers=L,
        recompute=setup.recompute,
        tp=t,
        sequence_parallel=par.sp,
        pp=p,
        interleave=par.interleave,
    )
    notes = (
        f"Φ per GPU by seed 002's formula: {params:,.0f} (the model's exact total: {total_params(model):,})",
        f"{SEED_002}: mixed-precision 16-bit weights and gradients, fp32 optimizer states",
    )
    return Estimate(persistent=(states, acts), notes=notes)


def textbook_training(model: Model, setup: TrainSetup) -> Estimate:
    refuse_textbook_knobs(setup)
    if not isinstance(model, BareModel):
        refuse_encoder_decoder(model, "textbook training (the seeds' formulas are for decoder-only models)")
        refuse_training(model)  # state-space hybrids (estimate/ssm_state.py)
    est = _seed000(model, setup) if setup.textbook.seed == Seed.SEED_000 else _seed002(model, setup)
    note = None if isinstance(model, BareModel) else training_positions(model, setup)
    return replace(est, notes=(*est.notes, note)) if note else est
