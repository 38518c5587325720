"""Finished runs: summaries, evaluation on any domain, and the ``measure`` report.

Everything here re-opens a run from its directory, and rebuilds its data exactly as
the run's saved ``config.json`` says (:func:`dtl_jax.train.load_domains`: same domains,
image size, channels, seed), so a model always sees inputs of the shape it was trained
on. Used by ``dtl-jax eval`` / ``dtl-jax measure`` and by the studies in
``experiments/``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax
import numpy as np

from dtl_jax import config as config_lib
from dtl_jax import data
from dtl_jax.train import selection as selection_lib
from dtl_jax.train import workdir as workdir_lib
from dtl_jax.train.loop import Domain, load_domains

#: The label-free criterion whose choice fills the "selected" column of the tables
#: (every criterion is kept in the JSON files): the accuracy on the held-out source
#: validation split. Chosen from the validator study (``experiments/validators.py``,
#: ``experiments/results/validators/``): over 329 runs of 15 methods on 6 shifts, its
#: per-run pick was +0.46 points [+0.10, +0.84] (paired 95% bootstrap interval) above
#: DEV's (You et al., ICML 2019; the default until then) and at most 0.5 points below
#: DEV's on any shift; target entropy is within noise of it (+0.04 [-0.40, +0.50]) but
#: fell 1.1 points below DEV on MNIST -> MNIST-M, and a method that sharpens its target
#: predictions (entropy minimisation, MCC) raises the entropy criterion by itself.
DEFAULT_SELECTION = "source_val_acc"
#: The criterion of run records written before :data:`DEFAULT_SELECTION` changed (records
#: without a ``"selection"`` key).
LEGACY_SELECTION = "dev"


def result_summary(
  result: Mapping[str, Any], *, selection: str = DEFAULT_SELECTION
) -> dict[str, Any]:
  """Target accuracies (%) of one run: label-free selected, last step, oracle.

  Returns:
    ``{"selected": acc at the checkpoint ``selection`` picks, "selected_step",
    "last": acc at the last step, "oracle": best target acc over all evaluations
    (uses target labels: an upper bound, never a selection rule), "by_criterion":
    {criterion: acc}, "source_acc": source test acc at the last step, "steps"}``.
  """
  sel = result["selected"]
  if selection not in sel:
    raise ValueError(
      f"selection criterion {selection!r} not in the run's criteria "
      f"{sorted(k for k in sel if k != 'last')}"
    )
  hist = result.get("history") or []
  oracle = max((h["oracle_target_acc"] for h in hist), default=None)
  return {
    "selection": selection,
    "selected": 100 * sel[selection]["target_acc"],
    "selected_step": sel[selection]["step"],
    "last": 100 * result["last"]["target_acc"],
    "oracle": None if oracle is None else 100 * oracle,
    "by_criterion": {k: 100 * v["target_acc"] for k, v in sel.items() if k != "last"},
    "source_acc": 100 * result["last"]["source_acc"],
    "steps": result["steps"],
  }


def reselect(record: Mapping[str, Any], selection: str = DEFAULT_SELECTION) -> dict[str, Any]:
  """A stored run record (a :func:`result_summary` of a study's ``runs.jsonl``) with its
  ``selected`` accuracy and step as ``selection`` picks them.

  Every criterion's pick is kept in ``record["by_criterion"]``, so a study's tables can
  be rewritten for another criterion without training again; the step comes from the
  record's ``history`` of scores when it has one (:func:`dtl_jax.train.selection.select`,
  ties to the later step), else it is ``None``. Records without a ``"selection"`` key
  were selected with :data:`LEGACY_SELECTION`. Failed runs (an ``"error"`` key) are
  returned unchanged.

  Raises:
    ValueError: ``selection`` is not among the record's criteria.
  """
  out = dict(record)
  if "error" in record or record.get("selection", LEGACY_SELECTION) == selection:
    out.setdefault("selection", selection)
    return out
  by = record.get("by_criterion") or {}
  if selection not in by:
    raise ValueError(
      f"selection criterion {selection!r} not in the run's criteria {sorted(by)} "
      f"({record.get('pair', '')} {record.get('method', '')} seed {record.get('seed', '?')})"
    )
  out["selection"], out["selected"], out["selected_step"] = selection, by[selection], None
  hist = record.get("history") or []
  if hist:
    records = [
      {"step": h["step"], "scores": h["scores"], "oracle_target_acc": h["target_acc"]} for h in hist
    ]
    pick = selection_lib.select(records, criteria=(selection,))[selection]
    out["selected_step"] = pick["step"]
  return out


def summarize_result(result: Mapping[str, Any]) -> str:
  """A short human-readable summary of a :func:`dtl_jax.train.fit` result."""
  s = result_summary(result)
  lines = [
    f"method {result['method']}: {s['steps']} steps, "
    f"{result.get('steps_per_second', float('nan')):.1f} steps/s",
    f"  target acc. at the label-free selected checkpoint ({DEFAULT_SELECTION}, step "
    f"{s['selected_step']}): {s['selected']:.2f}%",
    f"  target acc. at the last step: {s['last']:.2f}%",
    f"  oracle (best target acc. over evaluations; uses target labels): {s['oracle']:.2f}%",
    "  by criterion: " + ", ".join(f"{k} {v:.2f}%" for k, v in s["by_criterion"].items()),
  ]
  lines += [f"  warning: {w}" for w in result.get("warnings", [])]
  return "\n".join(lines)


def run_domain(config: Mapping[str, Any], name: str) -> Domain:
  """Domain ``name`` as a run of ``config`` sees it.

  The run's own source and target are exactly the arrays it used. Any other domain is
  loaded as the target of the pair ``(run's source, name)``: same image size, channels
  and normalization, and (digits) drawn from the target's half of the raw images,
  disjoint from the source's training images.
  """
  d = config["data"]
  source, target = load_domains(config)
  if name in (d["source"], d["target"]):
    return source if name == d["source"] else target
  other = config_lib.from_dict(config_lib.config_to_dict(config))
  other.data.target = name
  if (
    len(source.input_shape) == 3
    and "channels" in data.domain_options(name)
    and "channels" not in other.data.domain_kwargs
  ):
    other.data.domain_kwargs.channels = int(source.input_shape[-1])
  domain = load_domains(other)[1]
  if domain.input_shape != source.input_shape:
    raise config_lib.ConfigError(
      f"domain {name!r} has inputs {domain.input_shape}, but the "
      f"run was trained on {source.input_shape}"
    )
  return domain


def model_outputs(
  model: Any,
  variables: Mapping[str, Any],
  x: Any,
  *,
  batch_size: int = 500,
  keys: Sequence[str] = ("logits", "probs", "features"),
  threads: int = 2,
) -> dict[str, np.ndarray]:
  """Inference outputs of a restored model over ``x`` (``[n, ...]`` array or a lazy view
  of a streamed domain, decoded by ``threads`` threads), in batches of ``batch_size``,
  compiled with the library's XLA options as training's evaluation is
  (:mod:`dtl_jax.xla_options`)."""
  import jax

  from dtl_jax import xla_options
  from dtl_jax.train.evaluation import predict
  from dtl_jax.train.state import apply_model

  @functools.partial(jax.jit, compiler_options=xla_options.step_compiler_options())
  def forward(v, xb):
    out, _ = apply_model(model, v, xb, train=False)
    out = dict(out)
    out["probs"] = jax.nn.softmax(out["logits"], -1)
    return {k: out[k] for k in keys if k in out}

  batch_size = max(1, min(batch_size, len(x)))
  return predict(forward, variables, x, batch_size=batch_size, keys=tuple(keys), threads=threads)


def evaluate_run(
  workdir: str | Path,
  *,
  domain: str | None = None,
  step: int | None = None,
  selected: str | None = None,
  split: str = "test",
) -> dict[str, Any]:
  """Accuracy (and per-class accuracy, %) of a trained run on a domain's split.

  Args:
    workdir: the run directory.
    domain: the domain (default: the run's target); see :func:`run_domain`.
    step: the checkpoint step (``checkpoints/`` or ``selected/``); default latest.
    selected: instead of ``step``, the checkpoint a label-free criterion picked
      (``"dev"``, ``"snd"``, ...).
    split: ``"train"`` or ``"test"``.
  """
  if split not in ("train", "test"):
    raise config_lib.ConfigError(f"--split must be 'train' or 'test', got {split!r}")
  config, model, variables, step = workdir_lib.restore_model(workdir, step=step, selected=selected)
  name = domain or config.data.target
  dom = run_domain(config, name)
  x, y = dom.split(split)
  logits = model_outputs(
    model, variables, x, keys=("logits",), batch_size=int(config.data.eval_batch_size)
  )["logits"]
  pred = logits.argmax(-1)
  per_class = {
    dom.class_names[c]: float(np.mean(pred[y == c] == c) * 100)
    for c in range(dom.num_classes)
    if np.any(y == c)
  }
  return {
    "workdir": str(workdir),
    "method": config.method,
    "step": step,
    "selected": selected,
    "domain": name,
    "split": split,
    "num_examples": int(len(y)),
    "accuracy": float(np.mean(pred == y) * 100),
    "per_class_accuracy": per_class,
  }


def measure(
  *,
  source: str | None = None,
  target: str | None = None,
  seed: int | None = None,
  workdir: str | None = None,
  candidates: Sequence[str] = (),
  num_labeled: int = 100,
  num_permutations: int = 500,
  out: str | None = None,
  overwrite: bool = False,
) -> dict[str, Any]:
  """``dtl-jax measure``: discrepancy of a domain pair and transferability of candidates.

  Data: built as the run in ``workdir`` built it (its image size, channels, seed;
  ``source`` / ``target`` default to the run's); without a run, as
  :func:`dtl_jax.config.default_config` would (``source`` / ``target`` required).
  Features: the ``features`` output of the run's model, else the raw inputs.
  Candidates: trained runs scored by LogME, H-score and LEEP on ``num_labeled``
  labelled target training examples (:func:`dtl_jax.stats.measure_report`).
  """
  import jax

  from dtl_jax import provenance, report, stats

  if out is not None:
    report.prepare_output_dir(out, overwrite=overwrite, what="a measure report")
  run_model = None
  if workdir:
    config, model, variables, _ = workdir_lib.restore_model(workdir)
    run_model = (model, variables)
  else:
    config = config_lib.default_config()
    if not (source and target):
      raise config_lib.ConfigError("measure needs --source and --target (or --workdir RUN)")
  config.data.source = source or config.data.source
  config.data.target = target or config.data.target
  if seed is not None:
    config.seed = int(seed)
  for role in ("source", "target"):
    try:
      data.check_domain_name(config.data[role])
    except ValueError as e:
      raise config_lib.ConfigError(f"--{role}: {e}") from None
  src = run_domain(config, config.data.source)
  tgt = run_domain(config, config.data.target)
  if run_model is not None:
    fs = model_outputs(*run_model, src.x_train, keys=("features",))["features"]
    ft = model_outputs(*run_model, tgt.x_train, keys=("features",))["features"]
    what = f"features of {workdir}"
  else:
    fs = np.asarray(src.x_train).reshape(len(src.x_train), -1)
    ft = np.asarray(tgt.x_train).reshape(len(tgt.x_train), -1)
    what = "raw inputs"
  n_l = min(num_labeled, len(tgt.x_train))
  feats, probs = {}, {}
  for w in candidates:
    cand_config, cand_model, cand_vars, _ = workdir_lib.restore_model(w)
    try:
      o = model_outputs(cand_model, cand_vars, tgt.x_train[:n_l], keys=("features", "probs"))
    except (flax.errors.FlaxError, ValueError, TypeError) as e:
      raise config_lib.ConfigError(
        f"candidate {str(w)!r} (trained on data.image_size={cand_config.data.image_size}) "
        f"cannot read the {tgt.input_shape} inputs of {config.data.target!r}: "
        f"{str(e).splitlines()[0]}"
      ) from e
    feats[str(w)] = o["features"]
    probs[str(w)] = o["probs"]
  rep = stats.measure_report(
    np.asarray(fs, np.float32),
    np.asarray(ft, np.float32),
    key=jax.random.key(int(config.seed)),
    target_labels=tgt.y_train[:n_l] if candidates else None,
    candidates=feats or None,
    candidate_source_probs=probs or None,
    num_classes=tgt.num_classes,
    num_permutations=num_permutations,
  )
  text = (
    f"{config.data.source} -> {config.data.target} ({what}, seed {config.seed})\n" + rep.format()
  )
  print(text)
  payload = {
    "source": config.data.source,
    "target": config.data.target,
    "features": what,
    "seed": int(config.seed),
    "report": rep.to_dict(),
  }
  if out is not None:
    meta = provenance.run_metadata(seeds=[int(config.seed)])
    (Path(out) / "measure.json").write_text(
      json.dumps(report.jsonable({**payload, "metadata": meta}), indent=2) + "\n"
    )
    (Path(out) / "measure.md").write_text(
      f"# dtl-jax measure\n\n```\n{text}\n```\n\n" + report.metadata_markdown(meta) + "\n"
    )
    report.finish_output_dir(out, what="measure report")
  return payload
