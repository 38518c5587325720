"""Before / after of each library change made for speed, read from committed results (issue 15).

``python -m benchmarks.changes [--out DIR]``

Builds one table, one row per (library change, metric, thread count), from numbers that
the benchmarks wrote; nothing here measures anything. :data:`CHANGES` is the list of
changes: for each, the commit that made it and where its before and after numbers are:

* the same run, a row of the library's former variant beside the current one (the LeNet
  step variants ``jax_xla_default`` / ``jax_flax_pool`` of :mod:`benchmarks.steps`, the
  stage profiles whose "before" column :func:`benchmarks.report.stage_variants` names, the
  source-only step on ``[x_s; x_t]`` of the end-to-end profile), read from the working
  tree's ``benchmarks/results/<machine>-<threads>t/*.json``;
* or two committed runs of the same benchmark, one at code before the change and one after,
  each read as committed (``git show <commit>:<path>``).

A change without such a measurement anywhere committed is listed as "not measured" with
the reason. Each number comes with its source (``file@commit`` and the path of keys inside
the JSON); a missing file, commit or key raises :class:`ChangesError` naming it.

Columns: ``before``, ``after``, ``after / before`` and ``speed-up`` (> 1: the change made
dtl_jax faster; ``before / after`` for times and dtl_jax/PyTorch ratios, ``after / before``
for PyTorch/dtl_jax ratios). Writes ``benchmarks/results/changes.{json,md}``;
``python -m experiments.readme_tables`` puts the table in the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import harness, jax_losses
from benchmarks.kernels_ab import FULL as kernels_ab_sizes
from benchmarks.kernels_ab import FULL_TILED as kernels_ab_tiled_sizes
from benchmarks.report import stage_variants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = "benchmarks/results"  # relative to the repository root
MACHINE = "amd-epyc"  # the committed machine: benchmarks/results/amd-epyc-<threads>t/
THREADS = (1, 2)


class ChangesError(RuntimeError):
  """A committed result the table needs is missing or has no such number (named in it)."""


@dataclasses.dataclass(frozen=True)
class Pick:
  """One number in a result file.

  ``file`` is relative to ``benchmarks/results/``; ``commit=None`` reads the working tree's
  file, a commit reads the file as committed there. ``keys`` walk into the JSON: a string
  is a dict key, a ``(field, value)`` pair selects the one list element whose ``field`` is
  ``value``.
  """

  file: str
  keys: tuple[str | tuple[str, str], ...]
  commit: str | None = None

  def where(self, depth: int | None = None) -> str:
    """``file[@commit]: keys``, e.g. ``amd-epyc-1t/e2e.json@28a48ad: rows[method=cdan].jax``
    (the first ``depth`` keys only, when given)."""
    at = f"@{self.commit}" if self.commit else ""
    return f"{self.file}{at}: " + "".join(map(_key_label, self.keys[:depth])).lstrip(".")


def _key_label(k: str | tuple[str, str]) -> str:
  if isinstance(k, tuple):
    return f"[{k[0]}={k[1]}]"
  return f".{k}" if k.isidentifier() else f'["{k}"]'


@dataclasses.dataclass(frozen=True)
class Ratio:
  """``num / den``, two numbers of result files (e.g. PyTorch's stage time over JAX's)."""

  num: Pick
  den: Pick

  def where(self) -> str:
    return f"{self.num.where()} / {self.den.where()}"


Value = Pick | Ratio


@dataclasses.dataclass(frozen=True)
class Row:
  """One metric at one thread count; ``higher_is_better`` for PyTorch/dtl_jax ratios."""

  metric: str
  threads: int
  before: Value
  after: Value
  higher_is_better: bool = False


@dataclasses.dataclass(frozen=True)
class Gap:
  """No committed before / after: why (``threads=None``: at any thread count)."""

  reason: str
  threads: int | None = None


@dataclasses.dataclass(frozen=True)
class Change:
  """A library change made for speed: short name, the commit that made it, its rows."""

  name: str
  commit: str
  rows: tuple[Row, ...] = ()
  gaps: tuple[Gap, ...] = ()
  note: str = ""


# ----------------------------------------------------------------- where the numbers are


def _file(threads: int, stem: str, machine: str = MACHINE) -> str:
  return f"{machine}-{threads}t/{stem}.json"


def step(threads: int, name: str, variant: str, commit: str | None = None) -> Pick:
  """Median step time of a LeNet step variant (:mod:`benchmarks.steps`) in results.json."""
  keys = ("steps", "rows", ("name", name), "variants", ("variant", variant), "median_s")
  return Pick(_file(threads, "results"), keys, commit)


def lenet_stage(threads: int, key: str, commit: str | None = None) -> Pick:
  """A LeNet stage of results.json's profile (``"jax pool1 reshape"``, ``"torch conv1"``)."""
  return Pick(_file(threads, "results"), ("steps", "profile", key), commit)


def e2e_stage(threads: int, key: str, commit: str | None = None) -> Pick:
  """A stage of Ganin's network in e2e.json's profile."""
  return Pick(_file(threads, "e2e"), ("profile", "stages", key), commit)


def e2e_profile_step(threads: int, key: str, commit: str | None = None) -> Pick:
  """A whole step of e2e.json's profile (``"jax source_only on [x_s; x_t]"``)."""
  return Pick(_file(threads, "e2e"), ("profile", "steps", key), commit)


#: A later session's machine (2-core Intel Xeon): kernels_ab.py and the start-up changes.
INTEL = "intel-r-xeon-r-processor"
#: benchmarks/kernels_ab.py's committed runs: their machine and configurations.
KERNELS_AB_MACHINE = INTEL
KERNELS_AB_DENSE = tuple(
  f"{loss} n={n} d={d}" for loss in ("mk_mmd", "jmmd") for n, d in kernels_ab_sizes
)
KERNELS_AB_TILED = tuple(f"mk_mmd_tiled n={n} d={d}" for n, d in kernels_ab_tiled_sizes)
KERNELS_AB_CONFIGS = KERNELS_AB_DENSE + KERNELS_AB_TILED


def kernels_ab(threads: int, config: str, variant: str) -> Pick:
  """Median time of a kernels_ab variant (``"before"``, ``"both_rules"``, ``"after"``)."""
  keys = ("rows", ("config", config), "timings", variant, "median_s")
  return Pick(f"{KERNELS_AB_MACHINE}-{threads}t/kernels_ab.json", keys)


def _kernels_ab_rows(before: str, after: str, configs: Sequence[str]) -> tuple[Row, ...]:
  """Value + gradient of each kernels_ab configuration, variant ``before`` against
  ``after``, at every thread count."""
  return tuple(
    Row(
      f"{config} value+grad, s",
      t,
      kernels_ab(t, config, before),
      kernels_ab(t, config, after),
    )
    for t in THREADS
    for config in configs
  )


def e2e_run(
  threads: int, method: str, *keys: str, commit: str | None = None, machine: str = MACHINE
) -> Pick:
  """A method's whole-run numbers in e2e.json (``"jax", "step_s", "median"``)."""
  return Pick(_file(threads, "e2e", machine), ("rows", ("method", method), *keys), commit)


def _same_run_stages(
  network: str, stage_pick: Callable[[int, str], Pick], stages: Sequence[str], threads: int
) -> tuple[Row, ...]:
  """Stage rows whose before / after are the variants :func:`stage_variants` names."""
  out = []
  for stage in stages:
    library, before = stage_variants(stage)
    out.append(
      Row(
        f"{network} {stage} stage fwd+bwd, s",
        threads,
        stage_pick(threads, f"jax {stage} {before}"),
        stage_pick(threads, f"jax {stage} {library}"),
      )
    )
  return tuple(out)


def _lenet_steps(
  threads: int, before: str, after: str, commit: str | None = None
) -> tuple[Row, ...]:
  """The LeNet DANN and DAN steps, variant ``before`` against variant ``after``."""
  return tuple(
    Row(
      f"{name} step, s",
      threads,
      step(threads, name, before, commit),
      step(threads, name, after, commit),
    )
    for name in ("LeNet DANN 128+128", "LeNet DAN 128+128")
  )


def _e2e_across(
  threads: int,
  method: str,
  before: str,
  after: str,
  *,
  machine: str = MACHINE,
  phases: Sequence[str] = (),
) -> tuple[Row, ...]:
  """A method's end-to-end numbers in two committed e2e.json files (and the dtl_jax
  run's ``phases``, e.g. ``"build"``)."""

  def pair(*keys: str) -> tuple[Pick, Pick]:
    return (
      e2e_run(threads, method, *keys, commit=before, machine=machine),
      e2e_run(threads, method, *keys, commit=after, machine=machine),
    )

  m = method.upper() if method != "source_only" else method
  return (
    *(
      Row(f"e2e {m} {phase} phase, dtl_jax s", threads, *pair("jax", f"{phase}_s", "median"))
      for phase in phases
    ),
    Row(f"e2e {m} whole run, dtl_jax s", threads, *pair("jax", "process_s", "median")),
    Row(f"e2e {m} whole run, dtl_jax/PyTorch", threads, *pair("process_ratio_jax_over_torch")),
    Row(f"e2e {m} step, dtl_jax s", threads, *pair("jax", "step_s", "median")),
    Row(
      f"e2e {m} step, PyTorch/dtl_jax",
      threads,
      *pair("step_ratio_torch_over_jax"),
      higher_is_better=True,
    ),
  )


_NO_E2E_BEFORE = (
  "no committed result times fit's start-up, imports or evaluation at code before this "
  "change: the end-to-end benchmark's first committed run (e2e.json at 970dd6d) ran code "
  "made after it, and the full benchmark (results.json) does not run fit"
)

_STARTUP = ("build", "first_step", "checkpoint")
_NO_2T_27F2D31 = (
  "the 2-thread e2e rerun at code 27f2d31 was disturbed (a test run overlapped its last "
  "PyTorch repeat) and not committed; see the rows of the two start-up changes together"
)
METHODS_E2E = ("source_only", "dann", "dan", "cdan")
#: The e2e.json commit with the code of both start-up changes (7bc28dd).
E2E_AFTER_STARTUP = "941a8ba"
#: The e2e.json commit with CDAN re-measured at code 8ba6c05.
E2E_AFTER_CDAN = "9ed2241"
#: The e2e.json commit with every method re-measured after 90c998c and bbe9b00.
E2E_AFTER_INIT_OPTIONS = "696d146"

#: The library changes made for speed, oldest first, with where their numbers are.
CHANGES: tuple[Change, ...] = (
  Change(
    "2x2 max-pool as reshape + max instead of nn.max_pool",
    "3f4d71d",
    rows=_lenet_steps(1, "jax_flax_pool", "jax", "b6ec440")
    + (
      Row(
        "LeNet pool1 stage fwd+bwd, s",
        1,
        lenet_stage(1, "jax pool1 nn.max_pool", "b6ec440"),
        lenet_stage(1, "jax pool1 reshape", "b6ec440"),
      ),
    ),
    gaps=(
      Gap(
        "no 2-thread run was committed while max_pool_2x2 was a reshape + reduce_max "
        "(3f4d71d..8c0476c); see the rows of both pooling changes together",
        threads=2,
      ),
    ),
    note=(
      "the same run: the full benchmark committed in b6ec440 (code 7b4e3d7, after 3f4d71d "
      "and before 8c0476c), jax_flax_pool (nn.max_pool) beside jax (the library's LeNet)"
    ),
  ),
  Change(
    "CORAL: exact Gram formulation for n << d",
    "801b9bf",
    gaps=(
      Gap(
        "the first committed benchmark run (results.json at b6ec440, code 7b4e3d7) came "
        "after it, and the loss rows time the library's automatic choice only (the "
        "PyTorch reference makes the same choice), never the covariance path at the same "
        "shapes"
      ),
    ),
  ),
  Change(
    "im2col convolutions (models.PatchConv, LeNet(patch_convs=...)), opt-in",
    "0b24bb2",
    rows=tuple(r for t in THREADS for r in _lenet_steps(t, "jax", "jax_patches")),
    note=(
      "an option, not a change of the default: before = the default LeNet (nn.Conv), "
      "after = LeNet(patch_convs=('conv1', 'conv2')), the same run"
    ),
  ),
  Change(
    "Source-free losses: jitted numeric cores (IM loss, SHOT loss, pseudo-labels)",
    "e509d4b",
    gaps=(
      Gap(
        "no benchmark times the source-free losses; the commit message's figures are test "
        "durations, in no result file"
      ),
    ),
  ),
  Change(
    "convert_vit: LoRA adapters initialized by a jitted init",
    "0e0ba13",
    gaps=(
      Gap(
        "no benchmark times the initialization of LoRA adapters (vit_speed.json times a "
        "ViT-S/16 forward + backward, without LoRA)"
      ),
    ),
  ),
  Change(
    "Symmetric-Gram derivative and hand-written MK-MMD/JMMD kernel-sum derivative",
    "7a6a0c5",
    rows=_kernels_ab_rows("before", "both_rules", KERNELS_AB_CONFIGS),
    note=(
      "the same run: benchmarks/kernels_ab.py times the library's losses with both "
      "derivative rules swapped for plain autodiff at trace time (before) beside the "
      f"library with both rules (variant both_rules), alternating in one process, on "
      f"{KERNELS_AB_MACHINE} (a later session's machine: the other rows ran on the AMD "
      "EPYC); the same files time each rule alone (variants sym_gram and kernel_jvp) and "
      "hold XLA's flop counts"
    ),
  ),
  Change(
    "MK-MMD/JMMD: one derivative rule for the whole weighted form Wᵀ K W (no [N, N] "
    "transpose in the backward)",
    "aff61e0",
    rows=_kernels_ab_rows("both_rules", "after", KERNELS_AB_DENSE),
    note=(
      "the same run as the rows of 7a6a0c5: the library with the weighted-form rule "
      "swapped for the two rules of 7a6a0c5 (both_rules) beside the library (after)"
    ),
  ),
  Change(
    "MK-MMD by row blocks (tile_size): the weighted-form rule, one backward product per block",
    "f2ee0ff",
    rows=_kernels_ab_rows("both_rules", "after", KERNELS_AB_TILED),
    note=(
      f"the same run as the rows of 7a6a0c5, blocks of {jax_losses.TILE} rows: "
      "autodiff of the checkpointed blocks with the two rules of 7a6a0c5 (both_rules) "
      "beside the library (after)"
    ),
  ),
  Change(
    "Train step honours Method.uses_target (no target forward/backward when unused)",
    "6b775c6",
    rows=tuple(
      Row(
        "e2e source_only step (profile, one batch), s",
        t,
        e2e_profile_step(t, "jax source_only on [x_s; x_t]"),
        e2e_profile_step(t, "jax source_only"),
      )
      for t in THREADS
    ),
    note=(
      "the same run: e2e.json's step profile (the b8c96fb run), the source-only step with "
      "the network run on [x_s; x_t] (as before the change) beside the library's step"
    ),
  ),
  Change(
    "fit: evaluation computes only the selection criteria; init compiled at O0",
    "1c897a6",
    gaps=(Gap(_NO_E2E_BEFORE + "; no committed e2e run uses --all-criteria"),),
  ),
  Change(
    "XLA:CPU convolutions off YNNPACK in the library's compiled steps",
    "f7e820a",
    rows=tuple(
      r
      for t in THREADS
      for r in (
        *_lenet_steps(t, "jax_xla_default", "jax"),
        *_same_run_stages("LeNet", lenet_stage, ("conv1", "conv2"), t),
        *_same_run_stages("Ganin net", e2e_stage, ("conv1", "conv2"), t),
      )
    ),
    note=(
      "the same run: jax_xla_default (XLA's default options, YNNPACK convolutions) beside "
      "jax; stages 'nn.Conv xla-default' beside 'nn.Conv'"
    ),
  ),
  Change(
    "MetricWriter imports tensorboardX without importing PyTorch",
    "9b26891",
    gaps=(Gap(_NO_E2E_BEFORE),),
  ),
  Change(
    "max_pool_2x2 as pairwise maxima instead of reduce_max",
    "8c0476c",
    rows=(
      *_e2e_across(1, "dann", "970dd6d", "6fc0e89"),
      Row(
        "LeNet pool1 stage fwd+bwd (max_pool_2x2), s",
        1,
        lenet_stage(1, "jax pool1 reshape", "b6ec440"),
        lenet_stage(1, "jax pool1 reshape", "2ce440b"),
      ),
      Row(
        "LeNet pool1 stage fwd+bwd (max_pool_2x2), PyTorch/dtl_jax",
        1,
        Ratio(
          lenet_stage(1, "torch pool1", "b6ec440"),
          lenet_stage(1, "jax pool1 reshape", "b6ec440"),
        ),
        Ratio(
          lenet_stage(1, "torch pool1", "2ce440b"),
          lenet_stage(1, "jax pool1 reshape", "2ce440b"),
        ),
        higher_is_better=True,
      ),
    ),
    gaps=(
      Gap(
        "no 2-thread run (results.json or e2e.json) was committed before 8c0476c; see the "
        "rows of both pooling changes together",
        threads=2,
      ),
    ),
    note=(
      "two runs: e2e.json at 970dd6d (code d59f975; one repeat, the other core running "
      "another job) against e2e.json at 6fc0e89 (code b8c96fb; quiet machine, 2 repeats); "
      "the library changes between those codes are 8c0476c and 3a0fbf8 (one label check "
      "instead of two in the data classes); the LeNet stage rows compare the full runs at "
      "b6ec440 (code 7b4e3d7) and 2ce440b (code 8c0476c), whose PyTorch pool1 times differ "
      "too (the ratio row); that stage pools standard-normal inputs, without the ReLU "
      "before it in the networks"
    ),
  ),
  Change(
    "2x2 pooling: the library's max_pool_2x2 against nn.max_pool (both pooling changes)",
    "3f4d71d+8c0476c",
    rows=tuple(
      r
      for t in THREADS
      for r in (
        *_lenet_steps(t, "jax_flax_pool", "jax"),
        *_same_run_stages("LeNet", lenet_stage, ("pool1",), t),
        *_same_run_stages("Ganin net", e2e_stage, ("pool1",), t),
      )
    ),
    note=(
      "the same run: the current results.json (LeNet steps and stages) and e2e.json "
      "(Ganin's MNIST network, the profile of the b8c96fb run)"
    ),
  ),
  Change(
    "CDAN's randomized-map matrices drawn once at trace time",
    "8900406",
    rows=tuple(r for t in THREADS for r in _e2e_across(t, "cdan", "6fc0e89", "28a48ad")),
    note=(
      "two runs of the same benchmark on the quiet machine: e2e.json at 6fc0e89 (code "
      "b8c96fb) and at 28a48ad (code d001e73, CDAN re-measured); the only library change "
      "between those codes is 8900406"
    ),
  ),
  Change(
    "Start-up computations (key splits, initializers, optimizer state) compiled once "
    "with backend optimizations off (xla_options.run_once)",
    "27f2d31",
    rows=_e2e_across(1, "dann", "2555b60", "bacd210", machine=INTEL, phases=_STARTUP),
    gaps=(Gap(_NO_2T_27F2D31, threads=2),),
    note=(
      f"two runs on {INTEL}: e2e.json at 2555b60 (code 7e53d00, 2 repeats) and at bacd210 "
      "(code 27f2d31, DANN re-measured, 3 repeats), quiet machine"
    ),
  ),
  Change(
    "Selected checkpoints hard-linked to the regular checkpoint of the same step",
    "7bc28dd",
    rows=_e2e_across(1, "dann", "bacd210", E2E_AFTER_STARTUP, machine=INTEL, phases=_STARTUP),
    gaps=(Gap(_NO_2T_27F2D31, threads=2),),
    note=(
      f"two runs on {INTEL}: e2e.json at bacd210 (code 27f2d31, 3 repeats) and at "
      f"{E2E_AFTER_STARTUP} (code 7bc28dd, 3 repeats), quiet machine"
    ),
  ),
  Change(
    "The two start-up changes together (run_once, linked selected checkpoints)",
    "27f2d31+7bc28dd",
    rows=tuple(
      r
      for t in THREADS
      for m in METHODS_E2E
      for r in _e2e_across(t, m, "2555b60", E2E_AFTER_STARTUP, machine=INTEL, phases=_STARTUP)
    ),
    note=(
      f"two runs on {INTEL}: e2e.json at 2555b60 (code 7e53d00, 2 repeats) and at "
      f"{E2E_AFTER_STARTUP} (code 7bc28dd, 3 repeats), quiet machine; no other library "
      "change between those codes"
    ),
  ),
  Change(
    "CDAN's randomized-map matrices drawn by one run_once computation",
    "8ba6c05",
    rows=tuple(
      r
      for t in THREADS
      for r in _e2e_across(
        t, "cdan", E2E_AFTER_STARTUP, E2E_AFTER_CDAN, machine=INTEL, phases=("first_step",)
      )
    ),
    note=(
      f"two runs on {INTEL}: e2e.json at {E2E_AFTER_STARTUP} (code 7bc28dd) and at "
      f"{E2E_AFTER_CDAN} (code 8ba6c05, CDAN re-measured), 3 repeats each, quiet machine"
    ),
  ),
  Change(
    "Start-up computations compiled with XLA:CPU's loop emitters (run_once); the bundled "
    "MNIST-M crops gathered from uint8 photos",
    "90c998c+bbe9b00",
    rows=tuple(
      r
      for t in THREADS
      for m in METHODS_E2E
      for r in _e2e_across(
        t, m, E2E_AFTER_CDAN, E2E_AFTER_INIT_OPTIONS, machine=INTEL, phases=("data", "build")
      )
    ),
    note=(
      f"two runs on {INTEL}: e2e.json at {E2E_AFTER_CDAN} (source_only, DANN and DAN at "
      f"code 7bc28dd, CDAN at 8ba6c05) and at {E2E_AFTER_INIT_OPTIONS} (code 37a1a9c, every "
      "method re-measured), 3 repeats each, quiet machine; the other library changes "
      "between those codes are ce0273e (fit evaluates before it saves, as before 7bc28dd) "
      "and 68721b2 (unused code removed)"
    ),
  ),
)


# ----------------------------------------------------------------- reading the numbers


def _read(file: str, commit: str | None, root: str) -> Any:
  rel = f"{RESULTS}/{file}"
  if commit is None:
    path = os.path.join(root, rel)
    if not os.path.exists(path):
      raise ChangesError(f"{rel} is missing from the working tree ({root})")
    with open(path) as f:
      text = f.read()
  else:
    try:
      out = subprocess.run(
        ["git", "-C", root, "show", f"{commit}:{rel}"],
        capture_output=True,
        text=True,
        check=False,
      )
    except OSError as e:
      raise ChangesError(f"{rel} at commit {commit}: cannot run git ({e})") from e
    if out.returncode != 0:
      why = (out.stderr.strip().splitlines() or ["git show failed"])[0]
      raise ChangesError(f"{rel} at commit {commit} cannot be read: {why}")
    text = out.stdout
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    at = f" at commit {commit}" if commit else ""
    raise ChangesError(f"{rel}{at} is not JSON: {e}") from e


class Reader:
  """Reads :class:`Pick` / :class:`Ratio` values, each file (and commit) parsed once."""

  def __init__(self, root: str = ROOT):
    self.root = root
    self._files: dict[tuple[str, str | None], Any] = {}

  def pick(self, p: Pick) -> float:
    key = (p.file, p.commit)
    if key not in self._files:
      self._files[key] = _read(p.file, p.commit, self.root)
    x = self._files[key]
    for i, k in enumerate(p.keys, 1):
      if isinstance(k, tuple):
        field, value = k
        if not isinstance(x, list):
          raise ChangesError(f"{p.where(i)}: not a list")
        found = [e for e in x if isinstance(e, dict) and e.get(field) == value]
        if len(found) != 1:
          raise ChangesError(
            f"{p.where(i)}: {len(found)} list elements with {field}={value!r} (need one)"
          )
        x = found[0]
      else:
        if not isinstance(x, dict) or k not in x:
          raise ChangesError(f"{p.where(i)}: no such key")
        x = x[k]
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
      raise ChangesError(f"{p.where()}: {x!r} is not a positive measured number")
    return float(x)

  def value(self, v: Value) -> float:
    if isinstance(v, Ratio):
      return self.pick(v.num) / self.pick(v.den)
    return self.pick(v)


def build(changes: Sequence[Change] = CHANGES, root: str = ROOT) -> list[dict[str, Any]]:
  """The table's rows (dicts), in the order of ``changes``; raises :class:`ChangesError`."""
  reader = Reader(root)
  rows: list[dict[str, Any]] = []
  for c in changes:
    for r in c.rows:
      before, after = reader.value(r.before), reader.value(r.after)
      rows.append(
        {
          "change": c.name,
          "commit": c.commit,
          "metric": r.metric,
          "threads": r.threads,
          "before": before,
          "after": after,
          "after_over_before": after / before,
          "speedup": after / before if r.higher_is_better else before / after,
          "higher_is_better": r.higher_is_better,
          "before_source": r.before.where(),
          "after_source": r.after.where(),
        }
      )
    for g in c.gaps:
      rows.append(
        {
          "change": c.name,
          "commit": c.commit,
          "metric": None,
          "threads": g.threads,
          "not_measured": g.reason,
        }
      )
  return rows


def result(changes: Sequence[Change] = CHANGES, root: str = ROOT) -> dict[str, Any]:
  """``changes.json``: the rows, the changes with their notes, and provenance."""
  from dtl_jax.provenance import git_commit

  return {
    "command": "python -m benchmarks.changes",
    "git_commit": git_commit(),
    "machine": MACHINE,
    "threads": list(THREADS),
    "changes": [{"name": c.name, "commit": c.commit, "note": c.note} for c in changes],
    "rows": build(changes, root),
  }


def _g(x: float) -> str:
  return f"{x:.4g}"


def to_markdown(res: dict[str, Any]) -> str:
  """``changes.md``: the table, then each change's note."""
  lines = [
    "# Library changes made for speed: before / after",
    "",
    f"Every number is read from a committed result file under `{RESULTS}/` by "
    f"`{res['command']}` (code at git {res['git_commit']}): the working tree's file, or "
    "`file@commit` as committed at that commit; after the colon, the keys inside the JSON "
    "(`[field=value]` selects a list element). speed-up > 1: the change made dtl_jax "
    "faster (before / after for times and dtl_jax/PyTorch ratios, after / before for "
    f"PyTorch/dtl_jax ratios). Machine: {res['machine']} (a row whose source is another "
    "machine's file, e.g. `intel-r-xeon-r-processor-1t/...`, ran on that machine), "
    f"{' and '.join(map(str, res['threads']))} thread(s) per framework.",
    "",
    "| change | metric | threads | before | after | after / before | speed-up | "
    "before: source | after: source |",
    "|---|---|---:|---:|---:|---:|---:|---|---|",
  ]
  for r in res["rows"]:
    change = f"{r['change']} ({r['commit']})"
    threads = "all" if r["threads"] is None else str(r["threads"])
    if r.get("not_measured"):
      lines.append(
        f"| {change} | – | {threads} | not measured | not measured | – | – | "
        f"{r['not_measured']} | |"
      )
      continue
    lines.append(
      f"| {change} | {r['metric']} | {threads} | {_g(r['before'])} | {_g(r['after'])} | "
      f"{r['after_over_before']:.2f} | **{r['speedup']:.2f}** | `{r['before_source']}` | "
      f"`{r['after_source']}` |"
    )
  notes = [c for c in res["changes"] if c["note"]]
  if notes:
    lines += ["", "Where the before and after come from:", ""]
    lines += [f"- {c['name']} ({c['commit']}): {c['note']}." for c in notes]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.changes",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--out", default=os.path.join(ROOT, RESULTS), help="output directory")
  args = p.parse_args(argv)
  try:
    res = result()
  except ChangesError as e:
    raise SystemExit(f"benchmarks.changes: {e}") from e
  md = to_markdown(res)
  print(md)
  print(harness.write_json_md(args.out, "changes", res, md), flush=True)
  return res


if __name__ == "__main__":
  main(sys.argv[1:])
