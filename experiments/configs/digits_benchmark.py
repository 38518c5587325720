"""Study 2: every method on three bundled digit shifts, several seeds.

The per-run protocol is ``experiments/configs/digits.py`` (LeNet + bottleneck, TLlib
SGD, 32 + 32 images per step). ``adda`` runs in two stages: its stage 1 is the
``source_only`` run of the same pair and seed (``init_from``), stage 2 adapts the target
encoder.

  python -m experiments.digits_benchmark            # full size -> experiments/results/digits_benchmark/
  python -m experiments.digits_benchmark --quick    # CI smoke size
"""

import ml_collections

METHODS = ("source_only", "ddc", "dan", "jan", "deep_coral", "dann", "cdan", "cdan_e",
           "mdd", "wdgrl", "domain_confusion", "adda")
PAIRS = (("digits", "digits_m"), ("digits", "digits_rot"), ("digits_m", "digits"))


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.methods = METHODS
  c.pairs = tuple(f"{s}->{t}" for s, t in PAIRS)
  c.seeds = (0, 1, 2)
  # Sized for a shared 2-core CPU (about 100 runs in well under an hour): 16x16 inputs,
  # 200 steps. Raise for real experiments, e.g. --config.steps ... (see README).
  c.image_size = 16
  c.steps = 200
  c.eval_every = 50
  if arg == "quick":
    c.methods = ("source_only", "dann", "adda")
    c.pairs = ("digits->digits_rot",)
    c.seeds = (0,)
    c.steps = 4
    c.eval_every = 2
  return c
