"""Study 3: how transferable are features in deep networks (Yosinski et al., NeurIPS 2014).

Reproduces the paper's Figure 2 protocol on the bundled digits (see
``experiments/configs/transferability.py`` for the set-up and its differences from
the paper): base networks on task A (digits 0-4) and task B (digits 5-9), then for
every n the four transferred networks BnB, BnB+, AnB, AnB+ trained on B, and target
(task B) test accuracy against n, over several seeds.

  python -m experiments.transferability [--quick] [--out DIR] [--overwrite]

Writes ``transferability.md`` / ``.json`` (table, per-seed values, config, seeds,
versions, machine) and ``transferability.png`` (the paper-style plot) to ``--out``
(default ``experiments/results/transferability``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dtl_jax import config as config_lib
from dtl_jax import provenance, report

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "transferability.py"
DEFAULT_OUT = HERE / "results" / "transferability"


class LayeredNet(nn.Module):
  """``len(conv_features)`` 3x3 convolutions, ``len(dense_features)`` dense layers, a head.

  Transferable layers are named ``layer1`` .. ``layerL``; the classifier is ``head``
  (always freshly initialized, as the paper's top layer).
  """

  conv_features: Sequence[int]
  dense_features: Sequence[int]
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = 0
    for i, f in enumerate(self.conv_features):
      k += 1
      x = nn.relu(nn.Conv(f, (3, 3), strides=(1 if i == 0 else 2), name=f"layer{k}")(x))
    x = x.reshape(x.shape[0], -1)
    for f in self.dense_features:
      k += 1
      x = nn.relu(nn.Dense(f, name=f"layer{k}")(x))
    return nn.Dense(self.num_classes, name="head")(x)


def _task(x: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  keep = np.isin(y, classes)
  remap = np.full(10, -1, np.int32)
  remap[list(classes)] = np.arange(len(classes), dtype=np.int32)
  return x[keep], remap[y[keep]]


def load_tasks(config) -> dict[str, tuple[np.ndarray, ...]]:
  """Tasks A and B: ``{"A": (x_train, y_train, x_test, y_test), "B": ...}``."""
  from dtl_jax.data.domain import load_domain

  dom = load_domain(config.domain, seed=0, size=config.image_size, pool=config.pool)
  out = {}
  for name, classes in (("A", config.classes_a), ("B", config.classes_b)):
    xtr, ytr = _task(dom.x_train, dom.y_train, classes)
    xte, yte = _task(dom.x_test, dom.y_test, classes)
    out[name] = (xtr, ytr, xte, yte)
  if config.b_train_fraction < 1.0:
    xtr, ytr, xte, yte = out["B"]
    n = max(len(config.classes_b), int(round(config.b_train_fraction * len(xtr))))
    sel = np.random.default_rng(12345).permutation(len(xtr))[:n]
    out["B"] = (xtr[sel], ytr[sel], xte, yte)
  return out


def make_trainer(model: LayeredNet, config):
  """A jitted ``train(params, mask, x, y, idx) -> params`` (one compile for all runs).

  ``mask`` has the structure of ``params`` with 0.0 on frozen leaves and 1.0 on
  trainable ones; updates are multiplied by it, so frozen layers stay bit-identical
  (the effect of ``optax.set_to_zero`` on a frozen group, without recompiling for
  every n).
  """
  tx = optax.adam(config.learning_rate)

  def loss_fn(params, x, y):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train(params, mask, x, y, idx):
    opt_state = tx.init(params)

    def body(carry, batch_idx):
      p, s = carry
      g = jax.grad(loss_fn)(p, x[batch_idx], y[batch_idx])
      u, s = tx.update(g, s, p)
      u = jax.tree.map(lambda a, m: a * m, u, mask)
      return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(body, (params, opt_state), idx)
    return params

  @jax.jit
  def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(model.apply({"params": params}, x), -1) == y)

  return train, accuracy


def run(config, *, progress: bool = True) -> dict:
  """Runs the whole study; returns per-seed accuracies and the mean ± std table rows."""
  tasks = load_tasks(config)
  num_layers = len(config.conv_features) + len(config.dense_features)
  model = LayeredNet(
    tuple(config.conv_features), tuple(config.dense_features), len(config.classes_b)
  )
  train, accuracy = make_trainer(model, config)
  xb_te, yb_te = jnp.asarray(tasks["B"][2]), jnp.asarray(tasks["B"][3])
  per_seed: dict[str, dict[int, list[float]]] = {}
  base_acc: dict[str, list[float]] = {"baseA (on A)": [], "baseB (on B)": []}
  conditions = [("BnB", "B", False), ("BnB+", "B", True), ("AnB", "A", False), ("AnB+", "A", True)]
  total = len(config.seeds) * (2 + len(conditions) * num_layers)
  bar = _bar(total, progress)
  t0 = time.time()
  for seed in config.seeds:
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    key, ka, kb = jax.random.split(key, 3)
    example = jnp.zeros((1,) + tasks["A"][0].shape[1:], jnp.float32)
    ones = lambda p: jax.tree.map(jnp.ones_like, p)

    def indices(n, rng=rng):
      return jnp.asarray(rng.integers(0, n, size=(config.steps, config.batch_size)))

    base = {}
    for name, k in (("A", ka), ("B", kb)):
      xtr, ytr, xte, yte = (jnp.asarray(a) for a in tasks[name])
      p0 = model.init(k, example)["params"]
      base[name] = train(p0, ones(p0), xtr, ytr, indices(len(xtr)))
      base_acc[f"base{name} (on {name})"].append(100 * float(accuracy(base[name], xte, yte)))
      bar.update(1)
    xtr, ytr = jnp.asarray(tasks["B"][0]), jnp.asarray(tasks["B"][1])
    for n in range(1, num_layers + 1):
      for cond, src, finetune in conditions:
        key, k = jax.random.split(key)
        fresh = model.init(k, example)["params"]
        params = {
          name: (base[src][name] if _layer_index(name) <= n else fresh[name]) for name in fresh
        }
        mask = {
          name: jax.tree.map(
            jnp.zeros_like if not finetune and _layer_index(name) <= n else jnp.ones_like,
            fresh[name],
          )
          for name in fresh
        }
        trained = train(params, mask, xtr, ytr, indices(len(xtr)))
        if not finetune:  # frozen really is frozen
          for name in fresh:
            if _layer_index(name) <= n:
              same = jax.tree.map(
                lambda a, b: bool(jnp.all(a == b)), trained[name], base[src][name]
              )
              assert all(jax.tree.leaves(same)), f"{cond} n={n}: frozen {name} changed"
        acc = 100 * float(accuracy(trained, xb_te, yb_te))
        per_seed.setdefault(cond, {}).setdefault(n, []).append(acc)
        bar.update(1)
  bar.close()
  return {
    "per_seed": per_seed,
    "base": base_acc,
    "num_layers": num_layers,
    "seconds": time.time() - t0,
  }


def _layer_index(name: str) -> int:
  return int(name[len("layer") :]) if name.startswith("layer") else 10**9


def _bar(total, enabled):
  from tqdm.auto import tqdm

  return tqdm(total=total, desc="transferability", disable=not enabled, unit="net")


def write_results(result: dict, config, out: Path) -> dict[str, Path]:
  meta = provenance.run_metadata(config=config, seeds=config.seeds)
  L = result["num_layers"]
  ns = list(range(1, L + 1))
  rows = []
  for name, accs in result["base"].items():
    rows.append({"network": name, "n": "–", "acc": report.mean_std(accs)})
  for cond in ("BnB", "BnB+", "AnB", "AnB+"):
    for n in ns:
      rows.append({"network": cond, "n": n, "acc": report.mean_std(result["per_seed"][cond][n])})
  series = {
    c: [report.mean_std(result["per_seed"][c][n])[0] for n in ns]
    for c in ("BnB", "BnB+", "AnB", "AnB+")
  }
  errors = {c: [report.mean_std(result["per_seed"][c][n])[1] for n in ns] for c in series}
  styles = {"BnB": "-o", "BnB+": "--o", "AnB": "-s", "AnB+": "--s"}
  base_b = report.mean_std(result["base"]["baseB (on B)"])[0]
  report.line_plot(
    out / "transferability.png",
    ns,
    series,
    errors=errors,
    styles=styles,
    xlabel="n = layers copied from the base network (frozen; '+': fine-tuned)",
    ylabel="task B test accuracy (%)",
    title=f"Yosinski et al. 2014 on digits (baseB = {base_b:.1f}%)",
    footer=report.footer_text(meta),
  )
  notes = [
    "Yosinski et al., *How transferable are features in deep neural networks?* "
    "(NeurIPS 2014), Figure 2 protocol on scikit-learn's digits: task A = digits "
    f"{tuple(config.classes_a)}, task B = digits {tuple(config.classes_b)} (relabeled), "
    f"{L} transferable layers (convs {tuple(config.conv_features)}, dense "
    f"{tuple(config.dense_features)}) + a fresh head; Adam lr {config.learning_rate}, "
    f"{config.steps} steps of batch {config.batch_size} per network; "
    f"{len(config.seeds)} seeds (mean ± std over seeds).",
    "AnB: first n layers from baseA frozen, the rest trained on B. BnB: the same with "
    "baseB (control). '+': all layers fine-tuned. Frozen layers are checked to be "
    "bit-identical to the base network after training.",
    "Scale: the paper uses ImageNet halves and an 8-layer AlexNet; this runs on 1,797 "
    "8x8 digits upsampled, so absolute numbers are not comparable — the shape of the "
    "curves (AnB dropping with n, fine-tuning recovering it) is the point.",
    f"Wall time: {result['seconds']:.0f} s.",
  ]
  extra = {
    "per_seed": {c: {str(n): v for n, v in d.items()} for c, d in result["per_seed"].items()},
    "base_per_seed": result["base"],
  }
  return report.write_report(
    out,
    "transferability",
    title="How transferable are features (Yosinski et al., 2014) — digits A/B",
    rows=rows,
    columns=[("network", "network"), ("n", "n"), ("acc", "task-B test acc. (%)")],
    metadata=meta,
    notes=notes,
    figures=["transferability.png"],
    extra=extra,
  )


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--quick", action="store_true", help="tiny CI smoke size")
  p.add_argument("--out", default=str(DEFAULT_OUT))
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--no-progress", action="store_true")
  args, overrides = p.parse_known_args(argv)
  try:
    config = config_lib.load_config(f"{CONFIG}:quick" if args.quick else CONFIG)
    config_lib.apply_overrides(config, overrides)
    out = report.prepare_output_dir(args.out, overwrite=args.overwrite, what="study results")
  except ValueError as e:
    print(f"transferability: error: {e}", file=sys.stderr)
    return 2
  result = run(config, progress=not args.no_progress)
  paths = write_results(result, config, out)
  report.finish_output_dir(out, what="transferability study")
  print(Path(paths["md"]).read_text().split("## Provenance")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
