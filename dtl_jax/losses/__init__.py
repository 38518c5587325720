"""Pure loss functions for deep transfer learning.

Every function here is pure (arrays in, scalar or small pytree out), has keyword-only
hyperparameters, and works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

# --- discrepancy losses: kernels, MMD / MK-MMD / JMMD, CORAL (issue 2) ---
from dtl_jax.losses.kernels import (
    GaussianKernel,
    LinearKernel,
    gaussian_kernel_sum,
    gaussian_kernels,
    mean_heuristic,
    median_heuristic,
    pairwise_sq_distances,
)
from dtl_jax.losses.mmd import DAN_MULTIPLIERS, JAN_KERNELS, jmmd, mk_mmd, mmd
from dtl_jax.losses.coral import coral, coral_tllib

# --- adversarial, distillation and entropy losses (issue 3) ---
from dtl_jax.losses.adversarial import (
    adda_discriminator_loss,
    adda_encoder_loss,
    class_soft_labels,
    dann_loss,
    domain_accuracy,
    domain_confusion_loss,
    soft_label_loss,
)
from dtl_jax.losses.cdan import (
    cdan_features,
    cdan_loss,
    multilinear_map,
    randomized_map_matrices,
    randomized_multilinear_map,
)
from dtl_jax.losses.distill import distillation_loss, hint_loss
from dtl_jax.losses.entropy import entropy, entropy_minimization_loss, entropy_weights, mcc_loss
from dtl_jax.losses.grl import dann_schedule, gradient_reverse, warm_start_schedule
from dtl_jax.losses.mdd import mdd_loss
from dtl_jax.losses.wdgrl import gradient_penalty, sliced_wasserstein, wasserstein_critic_loss

# --- source-free and test-time adaptation (issue 17) ---
from dtl_jax.losses.source_free import (
    ShotPseudoLabels,
    information_maximization_loss,
    shot_loss,
    shot_pseudo_labels,
    tent_loss,
)
