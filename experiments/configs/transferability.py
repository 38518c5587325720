"""Study 3: how transferable are features (Yosinski et al., NeurIPS 2014), on digits.

The paper splits ImageNet's 1000 classes into two halves A and B, trains an 8-layer
network on each (baseA, baseB), then for n = 1..7 copies the first n layers of baseA
(or baseB) into a new network and trains the remaining layers on B:

* ``BnB``  -- first n layers from baseB, frozen (selfer control: fragile co-adaptation);
* ``BnB+`` -- the same, but all layers fine-tuned;
* ``AnB``  -- first n layers from baseA, frozen (transfer: specificity + co-adaptation);
* ``AnB+`` -- the same, fine-tuned (transfer + fine-tuning: the paper's "boost").

Here (a CPU, offline, minutes): the 1,797 scikit-learn digits at ``image_size`` pixels,
A = digits 0-4, B = digits 5-9, a 5-layer network (3 convolutions + 2 dense layers, then
a fresh classification head) so ``n = 1..5``. Usage::

  python -m experiments.transferability            # full size, experiments/results/...
  python -m experiments.transferability --quick    # CI smoke size
"""

import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.study = "transferability"
  c.domain = "digits"
  c.pool = "all"  # all 1,797 images; tasks A/B split by class.
  c.image_size = 16
  c.classes_a = (0, 1, 2, 3, 4)
  c.classes_b = (5, 6, 7, 8, 9)
  # 5 seeds x (2 bases + 4 conditions x 5 layers) = 110 networks, ~20 minutes on one
  # CPU core; a larger run: --config.conv_features="(16,32,64)"
  # --config.dense_features="(128,64)" --config.steps=600 --config.batch_size=64.
  c.conv_features = (8, 16, 32)  # layers 1-3: 3x3 convs (stride 1, 2, 2), ReLU
  c.dense_features = (64, 32)  # layers 4-5: dense, ReLU; then a fresh head
  c.steps = 250  # per network (base and transferred)
  c.batch_size = 32
  c.learning_rate = 1e-3  # Adam
  c.b_train_fraction = 1.0  # fraction of B's training images used (small B -> more transfer)
  c.seeds = (0, 1, 2, 3, 4)
  if arg == "quick":
    c.image_size = 8
    c.conv_features = (4, 8)
    c.dense_features = (16,)
    c.steps = 20
    c.batch_size = 16
    c.seeds = (0,)
  return c
