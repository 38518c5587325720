"""The DANN paper's MNIST -> MNIST-M protocol (Ganin et al., JMLR 2016, Sec. 5.2.2 / 5.2.4).

On the bundled real domains ``mnist`` -> ``mnist_m`` (:mod:`dtl_jax.data.mnist`: 2,000
training images per domain, disjoint MNIST digits, 28x28; the source's channel is
repeated to 3):

* network (the paper's Fig. 4, MNIST architecture): feature extractor ``dann_mnist``
  (conv5-32, ReLU, max-pool 2, conv5-48, ReLU, max-pool 2: 768 features), no
  bottleneck, label predictor fc-100, ReLU, fc-100, ReLU, fc-10 (``head_hidden``);
  DANN's domain classifier fc-100, ReLU, fc-1 (``method_kwargs.hidden = (100,)``, no
  BatchNorm);
* SGD with momentum 0.9 (no Nesterov, no weight decay), learning rate
  ``mu_p = 0.01 / (1 + 10 p)^0.75`` with ``p = step / num_steps``: the optimizer's
  ``lr * (1 + lr_gamma * step)^-lr_decay`` with ``lr_gamma = 10 / num_steps``,
  ``lr_decay = 0.75``;
* DANN's reversal coefficient ``lambda_p = 2 / (1 + exp(-10 p)) - 1``
  (``method_kwargs.schedule = "dann"``), domain loss weight 1;
* 64 source + 64 target images per step (the paper's batches of 128, half from each
  domain).

Not recoverable from the paper and set here: the number of steps (:data:`STEPS`; the
paper trains "until convergence"), weight initialization (Flax defaults; the paper's
Caffe code is not in the paper), the paper's mean-pixel subtraction (inputs stay in
[0, 1]). Every other method uses the same network, optimizer and batches with its
library defaults (TLlib's where they exist; WDGRL ``trade_off = 0.1`` as in
``experiments/configs/digits.py``).

``get_config("<method>")`` or ``get_config("<method>:<num_steps>")`` (the learning-rate
schedule follows ``num_steps``; change both together, ``lr_gamma = 10 / num_steps``)::

  dtl-jax train --config experiments/configs/dann_mnist_m.py:dann --workdir runs/dann_mm
  dtl-jax train --config experiments/configs/dann_mnist_m.py:source_only:3000 --workdir runs/so
"""

import ml_collections

from dtl_jax.config import default_config

#: Optimizer steps of the protocol: 600 steps of 64 source images are 19 epochs of the
#: 2,000 source training images (source-only's source and target accuracies plateau by
#: step 250 of a 1,500-step run; the CPU budget of experiments/real_digits.py).
STEPS = 600
EVAL_EVERY = 100

#: The paper's DANN: its schedule and its domain classifier (fc-100, ReLU, fc-1).
DANN_KWARGS = {"schedule": "dann", "hidden": (100,), "batch_norm": False}
METHOD_KWARGS = {"dann": DANN_KWARGS, "wdgrl": {"trade_off": 0.1}}


def set_steps(c: ml_collections.ConfigDict, steps: int, eval_every: int = EVAL_EVERY) -> None:
  """``num_steps`` and the learning-rate schedule that follows it (``10 / num_steps``)."""
  c.train.num_steps = int(steps)
  c.optim.lr_gamma = 10.0 / int(steps)
  c.train.eval_every = min(int(eval_every), int(steps))
  c.train.checkpoint_every = int(steps)
  c.train.log_every = min(50, int(steps))


def get_config(arg=None):
  method, _, steps = (arg or "dann").partition(":")
  c = default_config()
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict(METHOD_KWARGS.get(method, {}))
  c.data.source, c.data.target = "mnist", "mnist_m"
  c.data.image_size = 28
  c.data.batch_size = 64
  c.data.target_batch_size = 64
  c.model.backbone = "dann_mnist"
  c.model.bottleneck_dim = 0
  c.model.head_hidden = (100, 100)
  c.optim.kind = "sgd"
  c.optim.learning_rate = 0.01
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0
  c.optim.lr_decay = 0.75
  set_steps(c, int(steps) if steps else STEPS)
  return c
