"""Result tables and plots: markdown + JSON + PNG, each naming config, seeds, versions, machine.

Used by ``dtl-jax demo`` and the study scripts in ``experiments/``. Every file written
here carries the run's metadata (see :func:`dtl_jax.provenance.run_metadata`), so
a committed table says what produced it.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Column = tuple[str, str]  # (row key, header)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
  a = np.asarray(values, dtype=np.float64)
  if a.size == 0:
    raise ValueError("values must be non-empty")
  std = float(a.std(ddof=1)) if a.size > 1 else 0.0
  return float(a.mean()), std


def format_cell(value: Any) -> str:
  """Formats a table cell: floats with 2 decimals, (mean, std) as ``m ± s``."""
  if value is None:
    return "–"
  if isinstance(value, bool):
    return "yes" if value else ""
  if (
    isinstance(value, (tuple, list))
    and len(value) == 2
    and all(isinstance(v, (int, float)) for v in value)
  ):
    return f"{value[0]:.2f} ± {value[1]:.2f}"
  if isinstance(value, float):
    if math.isnan(value):
      return "nan"
    return f"{value:.2f}"
  return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
  """A GitHub markdown table of ``rows`` (dicts) with the given (key, header) columns."""
  header = "| " + " | ".join(h for _, h in columns) + " |"
  sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
  lines = [header, sep]
  for row in rows:
    lines.append("| " + " | ".join(format_cell(row.get(k)) for k, _ in columns) + " |")
  return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
  """The same table aligned for a terminal."""
  cells = [[h for _, h in columns]] + [[format_cell(r.get(k)) for k, _ in columns] for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
  out = []
  for j, c in enumerate(cells):
    out.append(
      "  ".join(
        s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(c, widths, strict=True))
      )
    )
    if j == 0:
      out.append("  ".join("-" * w for w in widths))
  return "\n".join(out)


def metadata_markdown(meta: Mapping[str, Any]) -> str:
  """The ``## Provenance`` section of a report (:func:`dtl_jax.provenance.run_metadata`)."""
  lines = ["## Provenance", ""]
  for key in ("date_utc", "command", "git_commit", "seeds"):
    if key in meta:
      lines.append(f"- **{key}**: `{meta[key]}`")
  if "versions" in meta:
    lines.append("- **versions**: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
  if "machine" in meta:
    lines.append("- **machine**: " + ", ".join(f"{k}: {v}" for k, v in meta["machine"].items()))
  if "config" in meta:
    lines += [
      "- **config**:",
      "",
      "```json",
      json.dumps(meta["config"], indent=2, sort_keys=True),
      "```",
    ]
  return "\n".join(lines)


def jsonable(x: Any) -> Any:
  """``x`` with NumPy values and non-finite floats turned into JSON-able ones."""
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  return x


def write_report(
  out_dir: str | Path,
  name: str,
  *,
  title: str,
  rows: Sequence[Mapping[str, Any]],
  columns: Sequence[Column],
  metadata: Mapping[str, Any],
  notes: Sequence[str] = (),
  figures: Sequence[str] = (),
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
  """Writes ``<name>.md`` and ``<name>.json`` into ``out_dir``.

  Args:
    out_dir: output directory (created).
    name: file stem.
    title: the markdown heading.
    rows: one dict per table row.
    columns: ``(key, header)`` pairs, in order.
    metadata: from :func:`dtl_jax.provenance.run_metadata` (config, seeds,
      versions, machine).
    notes: paragraphs printed under the title (protocol, caveats).
    figures: PNG file names (relative to ``out_dir``) to embed.
    extra: more JSON-able data for the JSON file only (e.g. per-seed values).

  Returns:
    ``{"md": path, "json": path}``.
  """
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  md = [f"# {title}", ""]
  for n in notes:
    md += [n, ""]
  md += [markdown_table(rows, columns), ""]
  for f in figures:
    md += [f"![{Path(f).stem}]({f})", ""]
  md += [metadata_markdown(metadata), ""]
  md_path = out / f"{name}.md"
  md_path.write_text("\n".join(md))
  payload = {
    "title": title,
    "notes": list(notes),
    "columns": [list(c) for c in columns],
    "rows": jsonable(list(rows)),
    "figures": list(figures),
    "metadata": jsonable(dict(metadata)),
  }
  if extra:
    payload["extra"] = jsonable(dict(extra))
  json_path = out / f"{name}.json"
  json_path.write_text(json.dumps(payload, indent=2) + "\n")
  return {"md": md_path, "json": json_path}


def _pyplot():
  import matplotlib

  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  return plt


def bar_plot(
  path: str | Path,
  labels: Sequence[str],
  series: Mapping[str, Sequence[float]],
  *,
  errors: Mapping[str, Sequence[float]] | None = None,
  ylabel: str = "target accuracy (%)",
  title: str = "",
  footer: str = "",
  hline: float | None = None,
  hline_label: str = "",
) -> Path:
  """Grouped bar chart: one group per label, one bar per series (with error bars).

  Args:
    path: the PNG to write.
    labels: group names (e.g. methods).
    series: name -> one value per label (e.g. "selected", "last step", "oracle").
    errors: optional name -> std per label.
    ylabel, title: axis label and title.
    footer: small text under the plot (config / seeds / machine).
    hline: optional horizontal reference line (e.g. source-only accuracy).
  """
  plt = _pyplot()
  n = len(series)
  x = np.arange(len(labels))
  width = 0.8 / max(n, 1)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2), dpi=110)
  for i, (name, values) in enumerate(series.items()):
    err = None if errors is None else errors.get(name)
    hatch = "//" if "oracle" in name.lower() else None
    ax.bar(
      x + (i - (n - 1) / 2) * width,
      values,
      width,
      yerr=err,
      label=name,
      capsize=2,
      hatch=hatch,
      alpha=0.6 if hatch else 1.0,
    )
  if hline is not None:
    ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label or None)
  ax.set_xticks(x, labels, rotation=30, ha="right")
  ax.set_ylabel(ylabel)
  return _finish(plt, fig, ax, path, title=title, footer=footer, grid_axis="y")


def line_plot(
  path: str | Path,
  x: Sequence[float],
  series: Mapping[str, Sequence[float]],
  *,
  errors: Mapping[str, Sequence[float]] | None = None,
  xlabel: str = "",
  ylabel: str = "",
  title: str = "",
  footer: str = "",
  styles: Mapping[str, str] | None = None,
) -> Path:
  """Lines with optional error bars (e.g. the Yosinski et al. 2014 figure)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
  for name, values in series.items():
    err = None if errors is None else errors.get(name)
    fmt = (styles or {}).get(name, "-o")
    ax.errorbar(x, values, yerr=err, fmt=fmt, label=name, capsize=3, ms=5)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_xticks(list(x))
  return _finish(plt, fig, ax, path, title=title, footer=footer, grid_axis="both")


def _save(plt, fig, path, footer: str) -> Path:
  """Adds the footer line, saves ``path`` (parents created) and closes the figure."""
  if footer:
    fig.text(0.01, 0.005, footer, fontsize=6, color="0.4", ha="left", va="bottom")
  fig.tight_layout(rect=(0, 0.03 if footer else 0, 1, 1))
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def _finish(plt, fig, ax, path, *, title: str, footer: str, grid_axis: str) -> Path:
  """Title, legend, grid and footer; saves ``path`` (parents created) and closes."""
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(axis=grid_axis, alpha=0.3)
  return _save(plt, fig, path, footer)


def footer_text(meta: Mapping[str, Any]) -> str:
  """One line for a figure: seeds, versions and machine."""
  parts = []
  if "seeds" in meta:
    parts.append(f"seeds {meta['seeds']}")
  v = meta.get("versions", {})
  parts.append(" ".join(f"{k} {v[k]}" for k in ("dtl-jax", "jax", "flax") if k in v))
  m = meta.get("machine", {})
  if m:
    parts.append(f"{m.get('cpu_model', m.get('processor', ''))} x{m.get('cpu_count', '?')}")
  if "git_commit" in meta and meta["git_commit"]:
    parts.append(f"git {meta['git_commit']}")
  return " | ".join(p for p in parts if p)


def aggregate_runs(
  runs: Sequence[Mapping[str, Any]], *, group_keys: Sequence[str], value_keys: Sequence[str]
) -> list[dict[str, Any]]:
  """Groups per-seed runs and reduces each value to ``(mean, std)`` over seeds.

  Args:
    runs: one dict per (group, seed), e.g. ``{"pair": "digits→digits_m", "method":
      "dann", "seed": 0, "selected": 71.2, "last": 70.1, "oracle": 73.0}``.
    group_keys: keys that define a row (``("pair", "method")``).
    value_keys: numeric keys to reduce; missing / None values are skipped.

  Returns:
    rows in first-seen group order: the group keys, ``n_seeds``, ``seeds`` and
    ``(mean, std)`` per value key.
  """
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for r in runs:
    groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
  rows = []
  for key, items in groups.items():
    row: dict[str, Any] = dict(zip(group_keys, key, strict=True))
    row["n_seeds"] = len(items)
    row["seeds"] = [it.get("seed") for it in items]
    for v in value_keys:
      vals = [float(it[v]) for it in items if it.get(v) is not None]
      row[v] = mean_std(vals) if vals else None
    rows.append(row)
  return rows


def flag_negative_transfer(
  rows: list[dict[str, Any]],
  *,
  baseline: str = "source_only",
  method_key: str = "method",
  group_key: str | None = "pair",
  value_key: str = "selected",
) -> list[dict[str, Any]]:
  """Marks rows whose mean ``value_key`` is below the baseline method's (same group).

  Adds ``"delta"`` (mean minus the baseline mean, percentage points) and
  ``"negative_transfer"`` (True when delta < 0) to every non-baseline row.
  """
  base = {}
  for r in rows:
    if r[method_key] == baseline and r.get(value_key) is not None:
      base[r.get(group_key) if group_key else None] = r[value_key][0]
  for r in rows:
    g = r.get(group_key) if group_key else None
    if r[method_key] == baseline or g not in base or r.get(value_key) is None:
      r["delta"] = None
      r["negative_transfer"] = None
      continue
    r["delta"] = r[value_key][0] - base[g]
    r["negative_transfer"] = bool(r["delta"] < 0)
  return rows


def decision_boundary_plot(
  path: str | Path, panels: Sequence[Mapping[str, Any]], *, footer: str = "", grid_size: int = 200
) -> Path:
  """Two-moons style figure: one panel per model, decision regions and the points.

  Args:
    path: the PNG to write.
    panels: dicts with ``title``, ``predict`` (a function ``[n, 2] -> [n]`` giving
      the probability of class 1), ``source_x`` ``[n_s, 2]``, ``source_y`` ``[n_s]``,
      ``target_x`` ``[n_t, 2]`` (plotted unlabeled, as in Ganin et al. 2016, Fig. 2).
    footer: small provenance text.
    grid_size: resolution of the decision-region grid.
  """
  plt = _pyplot()
  allx = np.concatenate([np.concatenate([p["source_x"], p["target_x"]]) for p in panels])
  lo, hi = allx.min(0) - 0.5, allx.max(0) + 0.5
  gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid_size), np.linspace(lo[1], hi[1], grid_size))
  grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), dpi=110, squeeze=False)
  for ax, p in zip(axes[0], panels, strict=True):
    prob = np.asarray(p["predict"](grid)).reshape(gx.shape)
    ax.contourf(gx, gy, prob, levels=[0, 0.5, 1], colors=["#f4c7c3", "#c6dbef"], alpha=0.8)
    ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.5)
    sx, sy = np.asarray(p["source_x"]), np.asarray(p["source_y"])
    ax.scatter(
      sx[sy == 0, 0], sx[sy == 0, 1], marker="+", c="tab:red", s=18, label="source, class 0"
    )
    ax.scatter(
      sx[sy == 1, 0], sx[sy == 1, 1], marker="_", c="tab:blue", s=18, label="source, class 1"
    )
    tx = np.asarray(p["target_x"])
    ax.scatter(tx[:, 0], tx[:, 1], c="0.3", s=6, alpha=0.6, label="target (unlabeled)")
    ax.set_title(p["title"], fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0][0].legend(fontsize=7, loc="lower left")
  return _save(plt, fig, path, footer)


OUTPUT_MARKER = "dtl_jax_output.json"


def prepare_output_dir(out: str | Path, *, overwrite: bool = False, what: str = "results") -> Path:
  """Makes ``out`` ready for the fresh result files of the demo or a study.

  An existing non-empty ``out`` is refused unless ``overwrite`` is given AND it holds
  results written by dtl-jax (the marker file ``dtl_jax_output.json``); then only the
  files listed in that marker are removed. Files this library did not write are never
  deleted.

  Raises:
    dtl_jax.train.WorkdirError: one line (pass --overwrite or another --out).
  """
  from dtl_jax.train.workdir import WorkdirError

  path = Path(out)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"output {str(path)!r} is a file; pass a directory with --out")
  if path.is_dir() and any(path.iterdir()):
    marker = path / OUTPUT_MARKER
    if not overwrite:
      raise WorkdirError(
        f"{str(path)!r} already holds {what}; pass --overwrite to replace "
        "them or --out DIR for a new directory"
      )
    if not marker.is_file():
      raise WorkdirError(
        f"{str(path)!r} is not empty and was not written by dtl-jax; "
        "choose another --out (nothing was deleted)"
      )
    try:
      info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
      info = {"in_progress": True}
    # A run that did not finish wrote everything in the directory (it was empty or
    # ours when it started); a finished one lists its entries.
    names = [p.name for p in path.iterdir()] if info.get("in_progress") else info.get("files", [])
    for name in names:
      f = path / name
      if f.resolve().parent != path.resolve() or name == OUTPUT_MARKER:
        continue
      if f.is_dir() and not f.is_symlink():
        shutil.rmtree(f)
      elif f.exists() or f.is_symlink():
        f.unlink()
    marker.unlink()
  path.mkdir(parents=True, exist_ok=True)
  (path / OUTPUT_MARKER).write_text(json.dumps({"what": what, "in_progress": True}) + "\n")
  return path


def finish_output_dir(out: str | Path, *, what: str) -> Path:
  """Writes the marker listing every file now in ``out`` (see :func:`prepare_output_dir`)."""
  path = Path(out)
  files = sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER)
  (path / OUTPUT_MARKER).write_text(
    json.dumps({"what": what, "in_progress": False, "files": files}, indent=2) + "\n"
  )
  return path
