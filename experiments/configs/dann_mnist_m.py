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

The protocol is defined once, in the library (:func:`dtl_jax.demo.dann_mnist_m_config`,
since ``dtl-jax demo`` trains it from an installed package); this file is that function
as a config file.

``get_config("<method>")`` or ``get_config("<method>:<num_steps>")`` (the learning-rate
schedule follows ``num_steps``; change both together, ``lr_gamma = 10 / num_steps``)::

  dtl-jax train --config experiments/configs/dann_mnist_m.py:dann --workdir runs/dann_mm
  dtl-jax train --config experiments/configs/dann_mnist_m.py:source_only:3000 --workdir runs/so
"""

from dtl_jax import demo

#: Optimizer steps and evaluation interval of the protocol (``dtl_jax.demo``).
STEPS = demo.DEMO_STEPS
EVAL_EVERY = demo.DEMO_EVAL_EVERY
set_steps = demo.set_steps


def get_config(arg=None):
  method, _, steps = (arg or "dann").partition(":")
  return demo.dann_mnist_m_config(method, steps=int(steps) if steps else STEPS)
