"""The default fast path (``_replay_default``, free blocks kept by size: ``_Buckets``) against the general
allocator (``_Allocator``, every rule) on the streams a MoE step makes: many tensors of a few equal sizes, in
runs, freed in runs or singly, so that equal free blocks tie and the lowest address must win."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from vramwise.estimate.allocator_model import FREE, Alloc, Free, replay, replay_ops
from vramwise.units import MIB

# a few sizes, each in the small pool, in the large pool's 20 MiB segments, and in segments of its own
SIZES = st.sampled_from([300, 512 * 1024, 3 * MIB, 7 * MIB + 5, 11 * MIB, 24 * MIB, 40 * MIB + 1])
# any size of the three ranges (the segment tails they leave differ, and tie)
ANY = st.one_of(st.integers(1, 1 << 20), st.integers((1 << 20) + 1, 12 << 20), st.integers(12 << 20, 100 << 20))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["alloc", "free-one", "free-oldest", "free-newest", "free-run"]),
            SIZES,
            st.integers(1, 12),  # run length
        ),
        max_size=60,
    )
)
def test_runs_of_equal_tensors_replay_as_the_general_allocator(script: list[tuple[str, int, int]]) -> None:
    ops: list[tuple[int, int]] = []
    live: list[int] = []
    key = 0
    for what, size, n in script:
        if what == "alloc" or not live:
            for _ in range(n):
                ops.append((key, size))
                live.append(key)
                key += 1
        elif what == "free-one":  # any live tensor: equal free blocks apart, which a later request ties on
            ops.append((live.pop(n * 7 % len(live)), FREE))
        elif what == "free-oldest":
            ops.append((live.pop(0), FREE))
        elif what == "free-newest":
            ops.append((live.pop(), FREE))
        else:  # a run of frees in allocation order, from the middle of what is live
            start = len(live) // 3
            run, live[start : start + n] = live[start : start + n], []
            ops += [(k, FREE) for k in run]
    fast = replay_ops(ops)
    general = replay([Alloc(key=k, size=s) if s >= 0 else Free(key=k) for k, s in ops])
    assert fast == replace(general, marks={})


def _moe_layer(dense: list[int], experts: int, expert: int) -> tuple[int, ...]:
    """One layer's parameter tensors as ``allocation.parameter_tensors`` spreads them: the dense ones, then
    ``experts`` equal expert tensors in a row, three projections each."""
    return (*dense, *[expert] * (3 * experts))


@settings(max_examples=100, deadline=None)
@given(
    saved=st.lists(ANY, max_size=4),
    dense=st.lists(ANY, max_size=3),
    experts=st.integers(1, 16),
    expert=ANY,
    layers=st.integers(1, 8),
    grads=st.booleans(),
    states=st.booleans(),
)
def test_moe_steps_replay_as_the_general_allocator(
    saved: list[int], dense: list[int], experts: int, expert: int, layers: int, grads: bool, states: bool
) -> None:
    # the step's own stream (allocation.py ``_step_ops``: two steps of forward, backward, states and transients)
    from vramwise.estimate.allocator_model import AllocatorConfig
    from vramwise.estimate.train.allocation import StepTensors, _step_ops

    layer = _moe_layer(dense, experts, expert)
    s = StepTensors(
        layers=layers, layer_persistent=(), outside_persistent=(), layer_grads=layer if grads else (),
        outside_grads=(3 * MIB,) if grads else (), saved=(), rebuilt=0.0, held=(), loss_temporaries=(), step=(),
        layer_step=layer, outside_step=(5 * MIB,), layer_states=layer * 2 if states else (),
        outside_states=(5 * MIB,) * 2 if states else (), config=AllocatorConfig(),
    )  # fmt: skip
    sizes = (tuple(saved), (), (24 * MIB,), (11 * MIB, 11 * MIB), (), ())  # no loss forward-only tensors
    ops = _step_ops(s, sizes, layers)
    fast = replay_ops(ops)
    general = replay([Alloc(key=k, size=n) if n >= 0 else Free(key=k) for k, n in ops])
    assert fast == replace(general, marks={})


@settings(max_examples=100, deadline=None)
@given(head=st.lists(ANY, max_size=6), layer=st.lists(ANY, min_size=1, max_size=12), times=st.integers(1, 8))
def test_the_default_load_replays_as_the_general_allocator(head: list[int], layer: list[int], times: int) -> None:
    from vramwise.estimate import allocator_model

    fast = allocator_model.load_reserves(head, tuple(layer), times, allocator_model.AllocatorConfig())
    # oracle: the general allocator, the same allocations in one stream, reserved − requested after each layer
    events: list[Alloc] = [Alloc(key=i, size=n) for i, n in enumerate(head)]
    general = []
    for _ in range(times):
        events += [Alloc(key=len(events), size=n) for n in layer]
        r = replay(events)
        general.append(r.reserved - sum(e.size for e in events))
    assert fast == general
