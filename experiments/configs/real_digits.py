"""Study: every method on the three real digit shifts, 5 seeds (``experiments/real_digits.py``).

* ``mnist -> mnist_m``: the DANN paper's protocol (``experiments/configs/dann_mnist_m.py``).
* ``mnist -> uci_digits`` and ``uci_digits -> mnist``: TLlib's digits protocol
  (``experiments/configs/tllib_digits.py``).

``adda`` runs in two stages: stage 1 is the ``source_only`` run of the same pair and
seed, stage 2 (``experiments/configs/adda.py``) adapts the target encoder.

Run length (:data:`STEPS`) is the CPU budget of the shared 2-core development machine
(the whole study on one core in a few hours); the protocols' optimizers, batches and
schedules are unchanged. The learning-rate schedule of the DANN protocol follows the run
length (``lr_gamma = 10 / num_steps``); TLlib's does not (``lr_gamma = 0.001`` per step).

  python -m experiments.real_digits             # full study, experiments/results/real_digits
  python -m experiments.real_digits --quick     # CI smoke size
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
  "mcc",
  "entropy_min",
  "instance_weighted",
  "adda",
)
PAIRS = ("mnist->mnist_m", "mnist->uci_digits", "uci_digits->mnist")
#: The protocol config file (in experiments/configs/) of each pair.
PROTOCOL = {
  "mnist->mnist_m": "dann_mnist_m.py",
  "mnist->uci_digits": "tllib_digits.py",
  "uci_digits->mnist": "tllib_digits.py",
}
#: Optimizer steps per run: 600 steps of 64 + 64 images (19 epochs of the 2,000 source
#: training images) for the DANN protocol; 300 steps of 128 + 128 for TLlib's (10 epochs
#: of MNIST's 4,000, 27 of UCI's 1,433). TLlib trains 50,000 steps. Measured on the shared
#: machine (other users' jobs, load average ~10 on 2 cores): about 1 step/s for the DANN
#: protocol; source-only's target accuracy plateaus by step 250 of a 1,500-step run.
STEPS = {"mnist->mnist_m": 600, "mnist->uci_digits": 300, "uci_digits->mnist": 300}
#: Evaluation (and label-free selection) points: 6 per run.
EVAL_EVERY = {"mnist->mnist_m": 100, "mnist->uci_digits": 50, "uci_digits->mnist": 50}

#: Published target accuracies (%). DANN paper (Ganin et al., JMLR 2016, Table 2,
#: MNIST -> MNIST-M); TLlib's benchmark (docs/dalib/benchmarks/image_classification.rst,
#: commit 40df20b61aef598611cc48a74ad6990ed7058b18, MNIST2USPS / USPS2MNIST, 50,000 steps on
#: the full MNIST and USPS; here uci_digits stands in for USPS).
PUBLISHED = {
  "mnist->mnist_m": {"source": "DANN paper", "source_only": 52.25, "dann": 76.66},
  "mnist->uci_digits": {
    "source": "TLlib MNIST2USPS",
    "source_only": 82.1,
    "dann": 91.7,
    "dan": 86.0,
    "jan": 84.0,
    "adda": 94.5,
    "cdan": 96.0,
    "mdd": 94.8,
  },
  "uci_digits->mnist": {
    "source": "TLlib USPS2MNIST",
    "source_only": 74.6,
    "dann": 95.2,
    "dan": 89.5,
    "jan": 86.8,
    "adda": 98.3,
    "cdan": 97.7,
    "mdd": 97.8,
  },
}


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.methods = METHODS
  c.pairs = PAIRS
  c.seeds = (0, 1, 2, 3, 4)
  c.steps = dict(STEPS)
  c.eval_every = dict(EVAL_EVERY)
  if arg == "quick":
    c.methods = ("source_only", "dann", "adda")
    c.pairs = ("mnist->mnist_m", "uci_digits->mnist")
    c.seeds = (0,)
    c.steps = {p: 4 for p in PAIRS}
    c.eval_every = {p: 2 for p in PAIRS}
  return c
