"""Study 2: every method on three bundled digit shifts, several seeds.

The per-run protocol is ``experiments/configs/digits.py`` (LeNet + bottleneck, TLlib
SGD, 32 + 32 images per step). ``adda`` runs in two stages: its stage 1 is the
``source_only`` run of the same pair and seed (``init_from``), stage 2 adapts the target
encoder.

  python -m experiments.digits_benchmark            # full size, experiments/results/...
  python -m experiments.digits_benchmark --quick    # CI smoke size
"""

import ml_collections

METHODS = (
  "source_only",
  "ddc",
  "dan",
  "jan",
  "deep_coral",
  "dann",
  "cdan",
  "cdan_e",
  "mdd",
  "wdgrl",
  "domain_confusion",
  "adda",
)
PAIRS = (("digits", "digits_m"), ("digits", "digits_rot"), ("digits_m", "digits"))


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.methods = METHODS
  c.pairs = tuple(f"{s}->{t}" for s, t in PAIRS)
  c.seeds = (0, 1, 2)
  # 108 runs on one CPU core in about an hour: 16x16 inputs (the 8x8 scikit-learn
  # digits upsampled; 28x28 adds no information and costs 3x), 500 steps of 32 + 32
  # images (~22 epochs of a domain's ~650 training images; source accuracy plateaus by
  # step 300). Raise for real experiments, e.g. --config.steps=2000.
  c.image_size = 16
  c.steps = 500
  c.eval_every = 100
  if arg == "quick":
    c.methods = ("source_only", "dann", "adda")
    c.pairs = ("digits->digits_rot",)
    c.seeds = (0,)
    c.steps = 4
    c.eval_every = 2
  return c
