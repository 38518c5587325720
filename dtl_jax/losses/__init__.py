"""Pure loss functions for deep transfer learning.

Every function here is pure (arrays in, scalar or small pytree out), has keyword-only
hyperparameters, and works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

# --- discrepancy losses: kernels, MMD / MK-MMD / JMMD, CORAL (issue 2) ---

# --- adversarial, distillation and entropy losses (issue 3) ---
