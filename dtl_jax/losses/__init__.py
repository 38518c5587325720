"""Pure loss functions for deep transfer learning.

Every function here is pure (arrays in, scalar or small pytree out), has keyword-only
hyperparameters, and works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

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
from dtl_jax.losses.coral import coral, coral_tllib
from dtl_jax.losses.distill import distillation_loss, hint_loss
from dtl_jax.losses.entropy import entropy, entropy_minimization_loss, entropy_weights, mcc_loss
from dtl_jax.losses.grl import dann_schedule, gradient_reverse, warm_start_schedule
from dtl_jax.losses.kernels import (
  GaussianKernel,
  LinearKernel,
  gaussian_kernel_sum,
  gaussian_kernels,
  mean_heuristic,
  median_heuristic,
  pairwise_sq_distances,
)
from dtl_jax.losses.mdd import mdd_loss
from dtl_jax.losses.mmd import DAN_MULTIPLIERS, JAN_KERNELS, jmmd, mk_mmd, mmd
from dtl_jax.losses.source_free import (
  ShotPseudoLabels,
  information_maximization_loss,
  shot_loss,
  shot_pseudo_labels,
  tent_loss,
)
from dtl_jax.losses.wdgrl import gradient_penalty, sliced_wasserstein, wasserstein_critic_loss

__all__ = [
  # discrepancy losses: kernels, MMD / MK-MMD / JMMD, CORAL
  "DAN_MULTIPLIERS",
  "JAN_KERNELS",
  "GaussianKernel",
  "LinearKernel",
  "coral",
  "coral_tllib",
  "gaussian_kernel_sum",
  "gaussian_kernels",
  "jmmd",
  "mean_heuristic",
  "median_heuristic",
  "mk_mmd",
  "mmd",
  "pairwise_sq_distances",
  # adversarial losses: gradient reversal, DANN, ADDA, CDAN, MDD, WDGRL, domain confusion
  "adda_discriminator_loss",
  "adda_encoder_loss",
  "cdan_features",
  "cdan_loss",
  "class_soft_labels",
  "dann_loss",
  "dann_schedule",
  "domain_accuracy",
  "domain_confusion_loss",
  "gradient_penalty",
  "gradient_reverse",
  "mdd_loss",
  "multilinear_map",
  "randomized_map_matrices",
  "randomized_multilinear_map",
  "sliced_wasserstein",
  "soft_label_loss",
  "warm_start_schedule",
  "wasserstein_critic_loss",
  # distillation and entropy losses
  "distillation_loss",
  "entropy",
  "entropy_minimization_loss",
  "entropy_weights",
  "hint_loss",
  "mcc_loss",
  # source-free and test-time adaptation: Tent, SHOT
  "ShotPseudoLabels",
  "information_maximization_loss",
  "shot_loss",
  "shot_pseudo_labels",
  "tent_loss",
]
