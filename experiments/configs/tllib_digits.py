"""TLlib's digits protocol on the bundled real domains: ``mnist`` <-> ``uci_digits``.

TLlib (``examples/domain_adaptation/image_classification/dann.sh``, Digits: MNIST ->
USPS and USPS -> MNIST) trains LeNet from scratch at 28x28 (``-a lenet --no-pool
--scratch``), a 256-d bottleneck, batches of 128 source + 128 target images, SGD with
Nesterov momentum 0.9 and weight decay 1e-3, learning rate
``lr * (1 + 0.001 i)^-0.75`` with ``lr = 0.01`` for MNIST -> USPS and ``lr = 0.1`` for
USPS -> MNIST. Here ``uci_digits`` (scikit-learn's UCI digits filling the frame) plays
USPS; ``mnist`` paired with it uses all 5,000 bundled MNIST digits (4,000 train /
1,000 test), ``uci_digits`` has 1,433 / 364.

Differences from TLlib, all forced or chosen for one comparable network:

* steps: :data:`STEPS` instead of TLlib's 20 x 2,500 (a CPU budget; the domains are 15x
  and 5x smaller than MNIST's 60,000 and USPS's 7,291 training images). TLlib's
  warm-start reversal (``max_iters = 1000``) is kept, so the adversarial methods' GRL
  coefficient only reaches 0.15 by step 300 (in TLlib's runs it is > 0.99 from step
  5,294 on);
* inputs in [0, 1] (TLlib normalizes to [-1, 1] with mean = std = 0.5);
* every method uses the bottleneck of TLlib's DANN / CDAN classifier (Linear, BatchNorm,
  ReLU; no dropout) and a linear head; TLlib's DAN / JAN / MDD classifiers add a dropout
  after it (DAN also drops the BatchNorm). Method hyperparameters are the library's
  (TLlib's) defaults; WDGRL ``trade_off = 0.1`` (``experiments/configs/digits.py``).

``get_config("<source>:<target>:<method>")`` (default ``mnist:uci_digits:dann``)::

  dtl-jax train --config experiments/configs/tllib_digits.py:uci_digits:mnist:cdan \
      --workdir runs/u2m_cdan
"""

import ml_collections

from dtl_jax.config import default_config

PAIRS = (("mnist", "uci_digits"), ("uci_digits", "mnist"))
#: TLlib's learning rate per pair (its MNIST2USPS / USPS2MNIST lines).
LEARNING_RATE = {("mnist", "uci_digits"): 0.01, ("uci_digits", "mnist"): 0.1}
STEPS = 300
EVAL_EVERY = 50
METHOD_KWARGS = {"wdgrl": {"trade_off": 0.1}}


def get_config(arg=None):
  parts = (arg or "mnist:uci_digits:dann").split(":")
  if len(parts) != 3:
    raise ValueError(f"expected <source>:<target>:<method>, got {arg!r}")
  source, target, method = parts
  if (source, target) not in LEARNING_RATE:
    raise ValueError(f"pair must be one of {[f'{s}:{t}' for s, t in PAIRS]}, got {source}:{target}")
  c = default_config()
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict(METHOD_KWARGS.get(method, {}))
  c.data.source, c.data.target = source, target
  c.data.image_size = 28
  c.data.batch_size = 128
  c.data.target_batch_size = 128
  c.model.backbone = "lenet"
  c.model.bottleneck_dim = 256
  c.model.bottleneck_dropout = 0.0
  c.model.bottleneck_batch_norm = True
  c.optim.kind = "sgd"
  c.optim.learning_rate = LEARNING_RATE[(source, target)]
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 1e-3
  c.optim.lr_gamma = 1e-3
  c.optim.lr_decay = 0.75
  c.train.num_steps = STEPS
  c.train.eval_every = EVAL_EVERY
  c.train.checkpoint_every = STEPS
  return c
