"""JAX (dtl_jax) versus PyTorch (TLlib ``dalib==0.2`` and Gram-form references): speed and memory.

Run ``python -m benchmarks.run --quick`` (smoke run, < 3 minutes on 2 CPU cores) or
``python -m benchmarks.run`` (the full run). Results are written to
``benchmarks/results/<machine>/`` as ``results.json``, ``results.md`` and ``results.png``.

Modules:

* :mod:`benchmarks.harness`    -- thread pinning, alternating timing, compile time, machine info.
* :mod:`benchmarks.torch_refs` -- Gram-form PyTorch losses and the dalib wrappers.
* :mod:`benchmarks.jax_losses` -- the JAX side: ``dtl_jax.losses`` wrapped as value-and-grad.
* :mod:`benchmarks.losses`     -- loss speed (forward + gradient) and the matmul limit.
* :mod:`benchmarks.memory`     -- peak memory per configuration in a capped subprocess.
* :mod:`benchmarks.steps`      -- LeNet DANN / DAN training steps, JAX ``jit`` vs PyTorch.
* :mod:`benchmarks.report`     -- JSON / markdown / PNG writers and the PASS/FAIL targets.
* :mod:`benchmarks.changes`    -- before / after of each library speed change, from the
  committed results (``python -m benchmarks.changes``).

Nothing here is imported by ``dtl_jax``.
"""
