"""Serving engines as they run a model: one memory plan per engine, modelled from its source at a stated release.

Each engine module (``vllm.py``, ``sglang.py``, ``llamacpp.py``, ``hf.py``) turns a ``ModelSpec``, an
``InferSetup`` and the engine's own flags (spelled as the engine spells them) into one ``EngineEstimate``
(``result.py``): the per-GPU terms and phases the table shows, the budget the engine gives itself, and what it
fits (KV tokens, concurrent sequences, the largest context). The table, the fit verdict and the capacity all
read that one result, so no output contradicts another. ``device_map.py`` is accelerate's layer placement,
which the hf plan spreads over several GPUs (transformers' ``from_pretrained(device_map=...)``). ``logs/`` parses
the engines' startup logs into the figures they print, for ``vramwise verify --log``.

Floors (tests/test_architecture.py): engines read estimate, formats, spec, workload and catalog; fit, verify,
report and app may read engines.
"""
