"""A phase's transient terms summed by name, for tests that read one moment of an estimate."""

from __future__ import annotations

from vramwise.estimate.term import Estimate, PhaseKind


def transient_sums(est: Estimate, kind: PhaseKind) -> dict[str, int]:
    """The transient bytes of the first phase of ``kind``, summed per term name (a name may repeat)."""
    phase = next(p for p in est.phases if p.kind is kind)
    out: dict[str, int] = {}
    for t in phase.transient:
        out[t.name] = out.get(t.name, 0) + t.bytes
    return out
