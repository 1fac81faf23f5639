"""accelerate's ``device_map`` placement as transformers 5.24 runs it for ``from_pretrained(device_map=...)``.

transformers integrations/accelerate.py ``_get_device_map`` (its own copies of accelerate 1.15's
utils/modeling.py functions, with transformers' size rules):

- module sizes: every parameter and buffer at its element size, tied copies (``lm_head.weight`` of a tied head)
  not counted (``compute_module_sizes``).
- ``balanced``/``auto``/``balanced_low_0``: ``get_balanced_memory`` caps every GPU but the last at
  total // n + 1.25 x max(largest no-split module, largest leaf module); ``balanced_low_0`` gives GPU 0 only what
  the others cannot hold. With one GPU and no ``max_memory``, 90% of its free memory. ``sequential``: each GPU's
  ``max_memory`` as given (``get_max_memory``).
- ``infer_auto_device_map``: modules in order (``model`` then ``lm_head``); one that fits the current device goes
  there (a tied module with it); one that does not is split into its children unless it is a leaf or in
  ``_no_split_modules`` (a decoder layer), else the next device takes it. GPU 0 and the CPU keep room for the
  largest remaining layer (a module offloaded to the CPU is brought back through GPU 0).
- without ``max_memory`` each GPU offers its free memory (accelerate ``get_max_memory``: cudaMemGetInfo's free,
  once the CUDA context exists), then the CPU; with ``max_memory`` only the GPUs named, then the disk.

The module tree is a Llama-style causal LM's (transformers 5.24 ``*ForCausalLM``): ``model`` (``embed_tokens``,
``layers.0..L-1``, ``norm``, ``rotary_emb``) then ``lm_head``. Buffers the spec does not describe are not
counted: Gemma's ``embed_scale`` (2 B) and DeepSeek-V3's ``e_score_correction_bias`` (4 B per expert per MoE
layer); a few bytes, which move a layer only if a cap falls within them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from vramwise.spec.model import ModelSpec
from vramwise.spec.params import ParamGroup, parameter_groups
from vramwise.spec.traits import Positions

Device = int | str  # a GPU index, "cpu" or "disk"
_EMBED, _HEAD = "model.embed_tokens", "lm_head"
_TIE = ("lm_head.weight", "model.embed_tokens.weight")


@dataclass(frozen=True)
class Node:
    """A module: its name, bytes (itself and below), children, and whether accelerate may split it."""

    name: str
    size: int
    children: tuple[Node, ...] = ()
    no_split: bool = False
    params: tuple[str, ...] = ()  # parameter names a tie can name

    @property
    def leaf(self) -> bool:
        return not self.children


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where each part of the model went: device per top-level part and per decoder layer, bytes per device."""

    layers: tuple[Device, ...]  # the device of decoder layer i
    parts: dict[str, Device]  # embed_tokens, norm, rotary_emb, lm_head
    bytes: dict[Device, int] = field(default_factory=dict)  # weights and buffers placed on each device
    max_memory: dict[Device, float] = field(default_factory=dict)  # the caps the placement ran with


def _inside(module: str, param: str) -> bool:
    return module == "" or (param + ".").startswith(module + ".")


def _layer_bytes(spec: ModelSpec, c: int) -> tuple[int, ...]:
    """Bytes of each decoder layer: attention and per-layer norms in every layer, the dense MLP or the experts."""
    moe = set(spec.moe.moe_layers) if spec.moe else set()
    dense = spec.num_layers - len(moe)
    per: dict[str, float] = {"all": 0.0, "dense": 0.0, "moe": 0.0}
    for g in parameter_groups(spec):
        size = g.count * g.width(c)
        if g.category in ("attention", "norms") and g.name != "norms.final":
            per["all"] += size / spec.num_layers
        elif g.category == "mlp":
            per["dense"] += size / dense
        elif g.category in ("experts", "experts_shared"):
            per["moe"] += size / len(moe)
    return tuple(round(per["all"] + (per["moe"] if i in moe else per["dense"])) for i in range(spec.num_layers))


def _bytes_of(spec: ModelSpec, c: int, *prefixes: str) -> int:
    return sum(g.count * g.width(c) for g in parameter_groups(spec) if _group_in(g, prefixes))


def _group_in(g: ParamGroup, prefixes: tuple[str, ...]) -> bool:
    return any(g.name == p or g.name.startswith(p + ".") for p in prefixes)


def rotary_bytes(spec: ModelSpec) -> int:
    """``rotary_emb``'s two fp32 buffers, ``inv_freq`` and ``original_inv_freq``, of d/2 each (the rotary dim d:
    the head dim, MLA's rope dim)."""
    if spec.traits.positions is not Positions.ROTARY:
        return 0
    mla = spec.attention.mla
    d = mla.qk_rope_head_dim if mla else spec.attention.head_dim
    return 2 * (d // 2) * 4


@functools.lru_cache(maxsize=256)
def module_tree(spec: ModelSpec, c: int) -> Node:
    """The causal LM's modules with their bytes at ``c`` bytes per element (fp32 groups kept fp32)."""
    layers = tuple(
        Node(name=f"model.layers.{i}", size=b, no_split=True) for i, b in enumerate(_layer_bytes(spec, c))
    )
    embed = Node(name=_EMBED, size=_bytes_of(spec, c, "embeddings"), params=(_TIE[1],))
    parts = [
        embed,
        Node(name="model.layers", size=sum(n.size for n in layers), children=layers),
        Node(name="model.norm", size=_bytes_of(spec, c, "norms.final")),
    ]
    if rotary_bytes(spec):
        parts.append(Node(name="model.rotary_emb", size=rotary_bytes(spec)))
    model = Node(name="model", size=sum(n.size for n in parts), children=tuple(parts))
    # a tied head's weight is the embedding's: transformers does not count it again (all_tied_weights_keys)
    head = Node(name=_HEAD, size=_bytes_of(spec, c, "head.lm_head", "head.bias"), params=(_TIE[0],))
    return Node(name="", size=model.size + head.size, children=(model, head))


def ties(spec: ModelSpec) -> tuple[tuple[str, ...], ...]:
    return (_TIE,) if spec.tied_embeddings else ()


def _walk(nodes: list[Node]) -> list[Node]:
    """Every module below ``nodes`` that accelerate treats as one layer (a leaf or a no-split module)."""
    out, todo = [], list(nodes)
    while todo:
        n = todo.pop(0)
        if n.leaf or n.no_split:
            out.append(n)
        else:
            todo = [*n.children, *todo]
    return out


def _max_layer(nodes: list[Node]) -> tuple[int, list[str]]:
    """accelerate ``get_max_layer_size``: the largest layer left and every layer of that size."""
    best, names = 0, []
    for n in _walk(nodes):
        if n.size > best:
            best, names = n.size, [n.name]
        elif n.size == best:
            names.append(n.name)
    return best, names


def balanced_memory(
    root: Node, caps: dict[Device, float], *, low_zero: bool, user_set: bool
) -> dict[Device, float]:
    """transformers ``get_balanced_memory``: caps that spread the model evenly over the GPUs."""
    caps = dict(caps)
    gpus = sorted(d for d, m in caps.items() if isinstance(d, int) and m > 0)
    if not gpus:
        return caps
    if len(gpus) == 1:
        low_zero = False
        if not user_set:
            caps[gpus[0]] *= 0.9  # "90% is a good compromise": the rest for generate's buffers
    layers = [n.size for n in _walk([root]) if n.no_split]
    leaves = [n.size for n in _walk([root]) if n.leaf]
    per_gpu = root.size // (len(gpus) - 1 if low_zero else len(gpus))
    per_gpu += int(1.25 * max([*layers, *leaves, 0]))
    for idx in gpus[:-1]:  # the last GPU keeps its whole cap, in case the buffer is not enough
        caps[idx] = min(caps[0] if low_zero and idx == 0 else per_gpu, caps[idx])
    if low_zero:
        caps[0] = min(max(0, root.size - sum(caps[i] for i in range(1, len(gpus)))), caps[0])
    return caps


def infer_device_map(
    root: Node, caps: Mapping[Device, float], tie_groups: tuple[tuple[str, ...], ...]
) -> dict[str, Device]:
    """transformers ``infer_auto_device_map`` over ``root``'s modules: module name -> device."""
    devices: list[Device] = [*caps, "disk"] if "disk" not in caps else list(caps)
    gpus = [d for d in devices if d not in ("cpu", "disk")]
    main = {gpus[0], "cpu"} if gpus else {"cpu"}
    used = dict.fromkeys(devices, 0.0)
    todo, current = list(root.children), 0
    placed: dict[str, Device] = {}
    biggest, names = _max_layer(todo)
    while todo:
        node = todo.pop(0)
        names = [n for n in names if n != node.name and not n.startswith(node.name + ".")]
        if not names:
            biggest, names = _max_layer(todo)
        tied = [
            p
            for g in tie_groups
            if any(_inside(node.name, k) for k in g) and not all(_inside(node.name, k) for k in g)
            for p in g
            if not _inside(node.name, p)
        ]
        device = devices[current]
        cap = caps.get(device) if device != "disk" else None
        reserved = 0
        if cap is not None and device in main:
            cap, reserved = cap - biggest, biggest
        partners = [n for n in todo if any(_inside(n.name, p) for p in tied)]
        size = node.size + sum(n.size for n in partners)
        if cap is None or used[device] + size <= cap:
            used[device] += size
            placed[node.name] = device
            for n in partners:  # a tied module goes with the module it shares a weight with
                todo.remove(n)
                placed[n.name] = device
            continue
        if not node.leaf and not node.no_split:  # split it: its children take its place in the queue
            todo = [*node.children, *todo]
            biggest, names = _max_layer(todo)
            continue
        used[device] += reserved  # nothing else fits here: the next device
        current += 1
        todo.insert(0, node)
    return placed


def placement(spec: ModelSpec, c: int, caps: Mapping[Device, float]) -> Placement:
    """Run the placement and say where each decoder layer and each top-level part went."""
    root = module_tree(spec, c)
    placed = infer_device_map(root, caps, ties(spec))

    def where(name: str) -> Device:
        for prefix in sorted(placed, key=len, reverse=True):
            if _inside(prefix, name + ".x") or prefix == name:
                return placed[prefix]
        raise KeyError(name)  # a bug: every module is placed

    sizes: dict[Device, int] = {}
    for n in _walk([root]):
        d = where(n.name)
        sizes[d] = sizes.get(d, 0) + n.size
    parts = {n.name: where(n.name) for n in root.children[0].children if n.name != "model.layers"}
    parts[_HEAD] = where(_HEAD)
    return Placement(
        layers=tuple(where(f"model.layers.{i}") for i in range(spec.num_layers)),
        parts=parts,
        bytes=sizes,
        max_memory=dict(caps),
    )
