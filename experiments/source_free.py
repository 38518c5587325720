"""Source-free adaptation on the bundled digits shifts: source-only vs AdaBN, Tent, SHOT.

For every shift and seed: train ``source_only`` with the training engine (the digits
protocol of ``experiments/configs/digits.py``: LeNet + 256-d BN bottleneck + linear head,
500 TLlib-SGD steps of 32 source images), then adapt copies of that source model with
**unlabeled target training images only** and score the target test split:

* ``source_only`` -- the source model, inference mode;
* ``adabn``       -- :func:`dtl_jax.methods.source_free.adabn` (target population
  statistics, no gradient step);
* ``tent``        -- offline Tent: ``--tent-epochs`` epochs of entropy minimisation on
  the BatchNorm scale / bias (Adam, lr 1e-3, batches of 64, dropout off), scored in
  inference mode (running statistics, updated by the Tent forward passes);
* ``shot_im``     -- SHOT without pseudo-labels (beta = 0);
* ``shot``        -- SHOT (beta = 0.3): head frozen, IM + pseudo-label CE, pseudo-labels
  recomputed over the whole target training set at the start of every epoch; SHOT's
  digit settings (SGD lr 0.01, momentum 0.9, Nesterov, weight decay 1e-3,
  ``lr (1 + 10 p)^-0.75``, batches of 64, 30 epochs, dropout on); the last partial
  batch of an epoch is dropped (SHOT keeps it).

Then online test-time adaptation (:func:`dtl_jax.methods.test_time.online_tta`): the
whole target domain (train + test, shuffled) streamed once in batches of 64, each batch
scored before the model adapts on it: ``source`` / ``norm`` (batch statistics) /
``tent``; and a continual stream of four shifts from the ``digits`` source model, with
and without a reset between shifts.

  python -m experiments.source_free [--quick] [--seeds 0 1 2] [--json FILE]

Prints the tables (mean ± std over seeds, target accuracy %). Nothing is written unless
``--json`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dtl_jax import models
from dtl_jax import params as params_lib
from dtl_jax.methods.source_free import SHOT, SourceFreeInputs, adabn, tent_optimizer
from dtl_jax.methods.test_time import TentState, make_tent_step, online_tta

PAIRS = (("digits", "digits_m"), ("digits", "digits_rot"), ("digits_m", "digits"))
CONTINUAL = ("digits_rot", "digits_noisy", "digits_inv", "digits_thick")
METHODS = ("source_only", "adabn", "tent", "shot_im", "shot")
ONLINE_MODES = ("source", "norm", "tent")


# ------------------------------------------------------------- engine glue (one place)


def train_source(source: str, target: str, seed: int, *, steps: int, workdir: str):
  """Trains ``source_only`` with the engine; returns ``(model, variables, load_domain)``.

  The only code that touches the training engine and its config helpers (being renamed):
  ``load_domain(name)`` loads a digits domain with the options of this run (disjoint
  target half, the source's channel count).
  """
  from dtl_jax import experiment_utils as eu
  from dtl_jax.train import fit

  config = eu.digits_config(
    "source_only", source=source, target=target, seed=seed, steps=steps, eval_every=steps
  )
  config.train.progress = False
  fit(config, workdir)
  run_config, model, variables, _ = eu.load_run(workdir)
  return model, variables, lambda name: eu.load_run_domain(run_config, name)


# ------------------------------------------------------------------------ helpers

# Jitted functions are cached by (kind, model, settings): every run of a shift has the
# same architecture, so each step compiles once per study instead of once per run.
_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, build):
  if key not in _CACHE:
    _CACHE[key] = build()
  return _CACHE[key]


def _accuracy(model, variables, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
  fwd = _cached(
    ("eval", model), lambda: jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])
  )
  pred = np.concatenate(
    [
      np.asarray(jnp.argmax(fwd(variables, jnp.asarray(x[i : i + batch_size])), -1))
      for i in range(0, len(x), batch_size)
    ]
  )
  return float(np.mean(pred == y) * 100)


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
  """Shuffled full batches (the last partial batch is dropped, as the library's sampler)."""
  perm = rng.permutation(n)
  return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def run_tent(
  model,
  variables,
  x: np.ndarray,
  *,
  epochs: int,
  seed: int,
  batch_size: int = 64,
  learning_rate: float = 1e-3,
) -> dict:
  """Offline Tent: ``epochs`` passes over the unlabeled target training images."""

  def build():
    tx = tent_optimizer(variables, learning_rate=learning_rate)
    return tx, make_tent_step(model, tx)

  tx, step = _cached(("tent", model, learning_rate), build)
  state = TentState(variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  rng = np.random.default_rng([seed, 17])
  for _ in range(epochs):
    for idx in _epoch_batches(len(x), batch_size, rng):
      state, _, _ = step(state, jnp.asarray(x[idx]))
  return {"params": state.params, "batch_stats": state.batch_stats}


def _shot_parts(model, variables, method: SHOT, max_iter: int, learning_rate: float):
  apply = models.make_apply_fn(model)
  labels = params_lib.label_params(
    variables["params"],
    [(rx, params_lib.FROZEN) for rx in method.freeze_patterns()] + [(".*", "trainable")],
  )
  # SHOT: lr0 * (1 + 10 * iter / max_iter) ** -0.75 with iter counted from 1.
  schedule = lambda i: learning_rate * (1 + 10 * (i + 1) / max_iter) ** -0.75
  tx = params_lib.make_optimizer(
    labels,
    base_tx=optax.sgd(schedule, momentum=0.9, nesterov=True),
    weight_decay={"trainable": 1e-3},
  )

  @jax.jit
  def step(params, batch_stats, opt_state, xb, pseudo, key):

    def objective(p):
      out, new_state = apply(
        {"params": p, "batch_stats": batch_stats}, xb, train=True, rngs={"dropout": key}
      )
      inputs = SourceFreeInputs(
        source={},
        target=out,
        labels=jnp.zeros((0,), jnp.int32),
        step=jnp.asarray(0),
        rng=key,
        source_weights=None,
        total_steps=max_iter,
        target_pseudo_labels=pseudo,
      )
      loss, _ = method.loss(inputs)
      return loss, new_state["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  @jax.jit
  def refresh(v, x):  # the whole target set in one inference pass, then obtain_label
    out, _ = apply(v, x, train=False)
    return method.refresh(out[method.feature_key], out["logits"])

  return tx, step, refresh


def run_shot(
  model,
  variables,
  x: np.ndarray,
  *,
  method: SHOT,
  epochs: int,
  seed: int,
  batch_size: int = 64,
  learning_rate: float = 0.01,
) -> dict:
  """SHOT's target stage (tim-learn/SHOT ``digit/uda_digit.py`` ``train_target``)."""
  n = len(x)
  max_iter = epochs * (n // batch_size)
  tx, step, refresh = _cached(
    ("shot", model, repr(method), max_iter, learning_rate),
    lambda: _shot_parts(model, variables, method, max_iter, learning_rate),
  )
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  rng = np.random.default_rng([seed, 23])
  key = jax.random.key(seed)
  it = 0
  for _ in range(epochs):
    pseudo = None
    if method.needs_pseudo_labels:  # refreshed at the start of every epoch
      pseudo = refresh({"params": params, "batch_stats": stats}, jnp.asarray(x))
    for idx in _epoch_batches(n, batch_size, rng):
      pl = None if pseudo is None else pseudo[jnp.asarray(idx)]
      params, stats, opt_state, _ = step(
        params, stats, opt_state, jnp.asarray(x[idx]), pl, jax.random.fold_in(key, it)
      )
      it += 1
  return {"params": params, "batch_stats": stats}


def _stream(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> list[tuple]:
  idx = np.random.default_rng([seed, 31]).permutation(len(x))
  return [
    (x[idx[i : i + batch_size]], y[idx[i : i + batch_size]]) for i in range(0, len(x), batch_size)
  ]


# ---------------------------------------------------------------------------- study


def run_pair(
  source: str, target: str, seed: int, *, steps: int, tent_epochs: int, shot_epochs: int
) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    model, variables, load_domain = train_source(source, target, seed, steps=steps, workdir=workdir)
    t_source = time.perf_counter() - t0
  dom = load_domain(target)
  x_tr, x_te, y_te = np.asarray(dom.x_train), np.asarray(dom.x_test), np.asarray(dom.y_test)
  acc, secs = {}, {"source_only": t_source}
  adapted = {
    "source_only": lambda: variables,
    "adabn": lambda: adabn(model, variables, [x_tr[i : i + 500] for i in range(0, len(x_tr), 500)]),
    "tent": lambda: run_tent(model, variables, x_tr, epochs=tent_epochs, seed=seed),
    "shot_im": lambda: run_shot(
      model, variables, x_tr, method=SHOT(beta=0.0), epochs=shot_epochs, seed=seed
    ),
    "shot": lambda: run_shot(model, variables, x_tr, method=SHOT(), epochs=shot_epochs, seed=seed),
  }
  for name, fn in adapted.items():
    t0 = time.perf_counter()
    v = fn()
    acc[name] = _accuracy(model, v, x_te, y_te)
    secs.setdefault(name, time.perf_counter() - t0)
  stream = _stream(
    np.concatenate([np.asarray(dom.x_train), x_te]),
    np.concatenate([np.asarray(dom.y_train), y_te]),
    64,
    seed,
  )
  online = {
    m: online_tta(model, variables, {target: stream}, mode=m).accuracy * 100 for m in ONLINE_MODES
  }
  continual = {}
  if source == "digits" and target == "digits_rot":
    shifts = {}
    for name in CONTINUAL:
      d = load_domain(name)
      shifts[name] = _stream(
        np.concatenate([np.asarray(d.x_train), np.asarray(d.x_test)]),
        np.concatenate([np.asarray(d.y_train), np.asarray(d.y_test)]),
        64,
        seed,
      )
    for label, mode, reset in (
      ("source", "source", "shift"),
      ("norm", "norm", "shift"),
      ("tent, reset per shift", "tent", "shift"),
      ("tent, continual", "tent", "never"),
    ):
      res = online_tta(model, variables, shifts, mode=mode, reset=reset)
      continual[label] = {k: v * 100 for k, v in res.per_shift.items()}
      continual[label]["all"] = res.accuracy * 100
  return {
    "pair": f"{source}->{target}",
    "seed": seed,
    "acc": acc,
    "seconds": secs,
    "online": online,
    "continual": continual,
  }


def _ms(values: Sequence[float]) -> str:
  v = np.asarray(values, float)
  return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"


def tables(runs: list[dict]) -> str:
  pairs = list(dict.fromkeys(r["pair"] for r in runs))
  seeds = sorted({r["seed"] for r in runs})
  lines = [
    f"Offline, target test accuracy (%), mean ± std over seeds {seeds}",
    "",
    "| shift | " + " | ".join(METHODS) + " |",
    "|---|" + "---:|" * len(METHODS),
  ]
  for p in pairs:
    rs = [r for r in runs if r["pair"] == p]
    lines.append(f"| {p} | " + " | ".join(_ms([r["acc"][m] for r in rs]) for m in METHODS) + " |")
  lines += [
    "",
    "Seconds per run (mean, 1 process): "
    + ", ".join(f"{m} {np.mean([r['seconds'][m] for r in runs]):.1f}" for m in METHODS),
  ]
  lines += [
    "",
    "Online (whole target domain streamed once, batches of 64, scored before "
    "each update), accuracy (%)",
    "",
    "| shift | " + " | ".join(ONLINE_MODES) + " |",
    "|---|" + "---:|" * len(ONLINE_MODES),
  ]
  for p in pairs:
    rs = [r for r in runs if r["pair"] == p]
    lines.append(
      f"| {p} | " + " | ".join(_ms([r["online"][m] for r in rs]) for m in ONLINE_MODES) + " |"
    )
  cont = [r for r in runs if r["continual"]]
  if cont:
    cols = list(CONTINUAL) + ["all"]
    lines += [
      "",
      "Continual stream from the digits source model (digits->digits_rot runs), accuracy (%)",
      "",
      "| mode | " + " | ".join(cols) + " |",
      "|---|" + "---:|" * len(cols),
    ]
    for label in cont[0]["continual"]:
      lines.append(
        f"| {label} | "
        + " | ".join(_ms([r["continual"][label][c] for r in cont]) for c in cols)
        + " |"
      )
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--steps", type=int, default=500, help="source training steps")
  ap.add_argument("--tent-epochs", type=int, default=10)
  ap.add_argument("--shot-epochs", type=int, default=30)
  ap.add_argument("--quick", action="store_true", help="smoke size: 1 seed, 1 shift, few steps")
  ap.add_argument("--json", default="", help="also write every run to this JSON file")
  args = ap.parse_args(argv)
  pairs: Sequence[tuple[str, str]] = PAIRS
  if args.quick:
    args.seeds, args.steps, args.tent_epochs, args.shot_epochs = [0], 20, 1, 1
    pairs = (("digits", "digits_rot"),)
  runs = []
  t0 = time.perf_counter()
  for source, target in pairs:
    for seed in args.seeds:
      r = run_pair(
        source,
        target,
        seed,
        steps=args.steps,
        tent_epochs=args.tent_epochs,
        shot_epochs=args.shot_epochs,
      )
      runs.append(r)
      print(
        f"{r['pair']} seed {seed}: " + ", ".join(f"{m} {r['acc'][m]:.1f}" for m in METHODS),
        flush=True,
      )
  print()
  print(tables(runs))
  print(f"\ntotal {time.perf_counter() - t0:.0f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "runs": runs}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
