"""Unsupervised domain adaptation on the bundled digits (any method, any digits pair).

LeNet (TLlib digits version) + 256-d bottleneck, TLlib SGD (lr 0.01, Nesterov 0.9,
weight decay 1e-3, lr ``(1 + 1e-3 i)^-0.75``), 32 source + 32 target images per step;
label-free checkpoint selection every ``train.eval_every`` steps. The argument after
``:`` is the method (``source_only``, ``ddc``, ``dan``, ``jan``, ``deep_coral``, ``dann``,
``cdan``, ``cdan_e``, ``mdd``, ``wdgrl``, ``domain_confusion``)::

  dtl-jax train --config experiments/configs/digits.py:dann --workdir runs/dann
  dtl-jax train --config experiments/configs/digits.py:jan \
      --config.data.target=digits_rot --config.train.num_steps=2000 --workdir runs/jan_rot

This is the protocol of ``dtl-jax demo`` and of ``experiments/digits_benchmark.py``.
"""

from dtl_jax import experiment_utils as eu


def get_config(arg=None):
  return eu.digits_config(arg or "source_only", source="digits", target="digits_m",
                          seed=0, steps=1000, eval_every=200)
