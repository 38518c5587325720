"""Office-31 at scale, end to end: the published ResNet-50 config on generated JPEG folders.

A user's Office-31 run exercises, in one go, everything the streaming pipeline promises:
decoding and augmenting per batch, a 224x224 ResNet-50 step, checkpoints, a kill and a
resume, evaluation with label-free selection, and ``dtl-jax eval`` on the pick. This
benchmark does exactly that through the ``dtl-jax`` command, in child processes, on data
it generates (no download, random weights), and measures each process's peak RSS:

1. **data**: JPEG folders with Office-31's layout and sizes,
   ``<tmp>/data/office31/{amazon,webcam}/images/<class>/*.jpg``, 31 classes, 2,817 and 795
   images (Office-31's amazon and webcam), of mixed resolutions (:data:`SIZES`), which is
   where ``experiments/configs/published.py:office31:A-W:dann`` reads them; the config
   is used as published (TLlib's Office protocol: 32 + 32 per step, SGD, ``tllib_imagenet``
   augmentation, 31-way head on a 256-d bottleneck) except ``model.pretrained=''`` (random
   weights), the step counts and ``log_every=1``;
2. **reference**: ``--steps`` steps without interruption, no evaluation or checkpoint
   before the last step; the process is SIGKILLed as soon as its last step is logged, so
   its peak RSS is that of training alone (read from ``/proc/<pid>/status`` ``VmHWM``
   before the kill);
3. **killed**: the same run with evaluations and checkpoints every ``--every`` steps,
   SIGKILLed ``--kill-delay`` seconds into the step after the first checkpoint (a
   mid-epoch step: an epoch of amazon is 88 steps);
4. **resumed**: the same command with ``--config.train.resume=true`` continues it from
   the checkpoint to the end, evaluating and picking checkpoints without target labels;
   its training metrics (every step's losses) must equal the reference run's bit for bit
   (augmentation and sampling are functions of (seed, step, example));
5. **eval**: ``dtl-jax eval --selected source_val_acc`` (the default criterion) must
   report the oracle target accuracy the run recorded for that pick;
6. **10x**: step 2 again on folders ten times larger (28,170 + 7,950 images): the peak
   RSS of training must not grow with the number of images.

Writes ``office_scale.json`` / ``office_scale.md`` under ``benchmarks/results/<machine>/``.

    python -m benchmarks.office_scale            # about 40 minutes on 2 cores
    python -m benchmarks.office_scale --quick    # a minute: tiny folders, LeNet at 32x32
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.input_pipeline import machine_name, photo_like
from benchmarks.memory import proc_status

ROOT = Path(__file__).resolve().parent.parent
CONFIG = f"{ROOT / 'experiments' / 'configs' / 'published.py'}:office31:A-W:dann"

#: Office-31's amazon and webcam domains: images per domain (31 classes each).
DOMAINS = {"amazon": 2817, "webcam": 795}
#: (w, h) drawn per image: Office-31's amazon product shots are mostly 300x300, webcam
#: frames 423x423 to 640x480; the mix makes decoding and resizing cost what photos do.
SIZES = ((300, 300), (423, 423), (640, 480), (500, 375), (375, 500))
#: peak RSS of the 10x run over the 1x run's that counts as "does not grow".
RSS_TOLERANCE = 1.05

#: what --quick changes: tiny folders, LeNet at 32x32 (resize 37 + crop 32), 4 + 4 batches.
QUICK_OVERRIDES = (
  "model.backbone=lenet",
  "model.bottleneck_dim=16",
  "data.image_size=32",
  "data.batch_size=4",
  "data.eval_batch_size=16",
)


# ---------------------------------------------------------------------------- data


def _write_images(job: tuple[str, int, int, int, int, Sequence[tuple[int, int]]]) -> int:
  """Writes images ``start .. stop-1`` of one domain; image ``i`` is drawn from
  ``default_rng([seed, i])``, so the files do not depend on how the work is split."""
  from PIL import Image

  root, start, stop, seed, classes, sizes = job
  total = 0
  for i in range(start, stop):
    rng = np.random.default_rng([seed, i])
    w, h = sizes[int(rng.integers(len(sizes)))]
    path = Path(root) / f"class_{i % classes:02d}" / f"{i:06d}.jpg"
    Image.fromarray(photo_like(rng, w, h)).save(path, quality=90)
    total += path.stat().st_size
  return total


def make_office_folders(
  data_root: Path,
  *,
  scale: float = 1.0,
  classes: int = 31,
  sizes: Sequence[tuple[int, int]] = SIZES,
  processes: int = 2,
) -> dict[str, dict[str, int]]:
  """Office-31's amazon and webcam folders, ``scale`` times their size, under
  ``data_root/office31/<domain>/images/<class>/`` (the published config's layout).

  Returns:
    ``{domain: {"images": n, "bytes": total file size}}``.
  """
  out = {}
  for seed, (name, n) in enumerate(DOMAINS.items()):
    n = max(classes, int(round(n * scale)))
    root = data_root / "office31" / name / "images"
    for c in range(classes):
      (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, 4 * processes + 1).astype(int)
    jobs = [
      (str(root), int(a), int(b), seed, classes, tuple(sizes))
      for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    if processes > 1:
      with multiprocessing.get_context("spawn").Pool(processes) as pool:
        total = sum(pool.map(_write_images, jobs))
    else:
      total = sum(map(_write_images, jobs))
    out[name] = {"images": n, "bytes": int(total)}
  return out


# ------------------------------------------------------------------ child processes


def run_child(
  args: Sequence[str],
  *,
  cwd: Path,
  log: Path,
  kill_when: Callable[[], bool] | None = None,
  timeout: float = 3600.0,
  poll: float = 0.2,
) -> dict[str, Any]:
  """Runs ``dtl-jax <args>`` in ``cwd`` (output to ``log``); SIGKILLs it as soon as
  ``kill_when()`` is true.

  Returns:
    ``{"args", "returncode", "killed", "wall_s", "peak_rss_bytes"}``: the peak RSS is
    the kernel's (``wait4``'s ``ru_maxrss``) for a process that exited, and ``VmHWM``
    read just before the kill for one that was killed.

  Raises:
    RuntimeError: the command failed, or ran past ``timeout`` (killed; log tail shown).
  """
  cmd = [sys.executable, "-c", "import sys; from dtl_jax.cli import main; sys.exit(main())"]
  t0 = time.perf_counter()
  with open(log, "w") as out:
    p = subprocess.Popen([*cmd, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
  killed, hwm = False, None
  try:
    while True:
      pid, status, usage = os.wait4(p.pid, os.WNOHANG)
      if pid:
        break
      if time.perf_counter() - t0 > timeout:
        os.kill(p.pid, signal.SIGKILL)
        os.wait4(p.pid, 0)
        raise RuntimeError(f"dtl-jax {' '.join(args)} ran past {timeout} s:\n{_tail(log)}")
      if kill_when is not None and kill_when():
        try:
          hwm = proc_status(p.pid)["VmHWM"]
        except (OSError, KeyError):  # exited meanwhile: wait4's figure below
          hwm = None
        os.kill(p.pid, signal.SIGKILL)
        pid, status, usage = os.wait4(p.pid, 0)
        killed = True
        break
      time.sleep(poll)
  finally:
    p.returncode = 0  # reaped above: keep Popen from waiting again
  code = os.waitstatus_to_exitcode(status)
  if not killed and code != 0:
    raise RuntimeError(f"dtl-jax {' '.join(args)} exited with {code}:\n{_tail(log)}")
  return {
    "args": list(args),
    "returncode": code,
    "killed": killed,
    "wall_s": time.perf_counter() - t0,
    "peak_rss_bytes": int(hwm if killed and hwm else usage.ru_maxrss * 1024),
  }


def _tail(log: Path, n: int = 3000) -> str:
  return log.read_text(errors="replace")[-n:] if log.exists() else ""


def _records(workdir: Path, kind: str = "train") -> list[dict[str, Any]]:
  """``metrics.jsonl``'s records of ``kind`` (without the wall-clock speed)."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  out = []
  for line in path.read_text().splitlines():
    try:
      r = json.loads(line)
    except json.JSONDecodeError:  # a line being written
      continue
    if r.get("kind") == kind:
      r.pop("steps_per_second", None)
      out.append(r)
  return out


def _checkpoints(workdir: Path) -> list[int]:
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _logged(workdir: Path, step: int) -> Callable[[], bool]:
  return lambda: any(r["step"] >= step for r in _records(workdir))


def _after_checkpoint(workdir: Path, step: int, delay: float) -> Callable[[], bool]:
  """True ``delay`` seconds after checkpoint ``step`` appeared (or once step + 1 is
  logged, whichever comes first)."""
  seen: list[float] = []

  def ready() -> bool:
    if not seen and step in _checkpoints(workdir):
      seen.append(time.perf_counter())
    return bool(seen) and (time.perf_counter() - seen[0] >= delay or _logged(workdir, step + 1)())

  return ready


# ------------------------------------------------------------------------- the run


def train_args(
  workdir: Path, *, steps: int, every: int, quick: bool, resume: bool = False
) -> list[str]:
  """``dtl-jax train`` arguments: the published Office-31 A->W DANN config with random
  weights, ``steps`` steps, evaluations and checkpoints every ``every`` steps."""
  overrides = [
    "model.pretrained=",
    f"train.num_steps={steps}",
    f"train.eval_every={every}",
    f"train.checkpoint_every={every}",
    "train.log_every=1",
    "train.progress=false",
    "train.tensorboard=false",
  ]
  if quick:
    overrides += list(QUICK_OVERRIDES)
  if resume:
    overrides.append("train.resume=true")
  return ["train", "--config", CONFIG, "--workdir", str(workdir)] + [
    f"--config.{o}" for o in overrides
  ]


def gib(nbytes: float) -> float:
  return nbytes / 2**30


def run(
  tmp: Path, *, steps: int, every: int, kill_delay: float, scale: float, quick: bool
) -> dict[str, Any]:
  """The six phases of the module docstring under ``tmp``; returns the results dict."""
  if not 0 < every < steps:
    raise ValueError(f"--every must be in (0, --steps={steps}), got {every}")
  result: dict[str, Any] = {"steps": steps, "every": every, "kill_delay_s": kill_delay}
  base, big = tmp / "1x", tmp / "10x"
  logs = tmp / "logs"
  logs.mkdir(parents=True, exist_ok=True)
  folder_scale = 0.1 if quick else 1.0

  def phase(name: str, fn: Callable[[], Any]) -> Any:
    print(f"[office_scale] {name} ...", flush=True)
    t0 = time.perf_counter()
    out = fn()
    print(f"[office_scale] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out

  result["data"] = phase("data 1x", lambda: make_office_folders(base / "data", scale=folder_scale))

  def reference_dir(root: Path) -> Path:
    return root / "runs" / "reference"

  def reference(root: Path, name: str) -> dict[str, Any]:
    """Training alone: SIGKILLed once the last step is logged (before its evaluation)."""
    workdir = reference_dir(root)
    return phase(
      name,
      lambda: run_child(
        train_args(workdir, steps=steps, every=steps, quick=quick),
        cwd=root,
        log=logs / f"{name}.log",
        kill_when=_logged(workdir, steps),
      ),
    )

  # 2. reference: training alone
  result["reference"] = reference(base, "reference")
  # 3. killed after the first checkpoint, 4. resumed to the end
  run_dir = base / "runs" / "A-W_dann"
  killed = phase(
    "killed",
    lambda: run_child(
      train_args(run_dir, steps=steps, every=every, quick=quick),
      cwd=base,
      log=logs / "killed.log",
      kill_when=_after_checkpoint(run_dir, every, kill_delay),
    ),
  )
  killed["last_logged_step"] = max((r["step"] for r in _records(run_dir)), default=0)
  killed["checkpoints"] = _checkpoints(run_dir)
  killed["finished"] = (run_dir / "result.json").exists()
  result["killed"] = killed
  result["resumed"] = phase(
    "resumed",
    lambda: run_child(
      train_args(run_dir, steps=steps, every=every, quick=quick, resume=True),
      cwd=base,
      log=logs / "resumed.log",
    ),
  )
  got, want = _records(run_dir), _records(reference_dir(base))
  run_result = json.loads((run_dir / "result.json").read_text())
  run_config = json.loads((run_dir / "config.json").read_text())
  result["run"] = {
    "config": {
      k: run_config[group][k]
      for group, keys in (
        ("data", ("batch_size", "eval_batch_size", "image_size", "augment", "threads", "prefetch")),
        ("model", ("backbone", "bottleneck_dim", "pretrained")),
        ("train", ("driver", "selection")),
      )
      for k in keys
    },
    "train_records_equal_reference": got == want,
    "train_records": len(got),
    "reference_records": len(want),
    "final_loss": got[-1]["loss"] if got else None,
    "history_steps": [h["step"] for h in run_result["history"]],
    "selected": run_result["selected"],
    "last": run_result["last"],
    "timings": run_result["timings"],
  }
  # 5. dtl-jax eval on the default criterion's pick
  from dtl_jax.runs import DEFAULT_SELECTION

  eval_log = logs / "eval.log"
  result["eval"] = phase(
    "eval",
    lambda: run_child(
      ["eval", "--workdir", str(run_dir), "--selected", DEFAULT_SELECTION],
      cwd=base,
      log=eval_log,
    ),
  )
  text = eval_log.read_text()
  reported = json.loads(text[text.index("{") : text.rindex("}") + 1])
  pick = run_result["selected"][DEFAULT_SELECTION]
  result["eval"].update(
    criterion=DEFAULT_SELECTION,
    step=reported["step"],
    accuracy=reported["accuracy"],
    num_examples=reported["num_examples"],
    recorded_step=pick["step"],
    recorded_accuracy=100 * pick["target_acc"],
    equal=reported["step"] == pick["step"]
    and abs(reported["accuracy"] - 100 * pick["target_acc"]) < 1e-9,
  )
  # 6. the reference run on folders ten times larger
  shutil.rmtree(base / "data")  # keep the disk bounded
  result["data_10x"] = phase(
    "data 10x", lambda: make_office_folders(big / "data", scale=folder_scale * scale)
  )
  result["reference_10x"] = reference(big, "reference_10x")
  ratio = result["reference_10x"]["peak_rss_bytes"] / result["reference"]["peak_rss_bytes"]
  result["checks"] = {
    "killed_mid_run": killed["killed"]
    and not killed["finished"]
    and bool(killed["checkpoints"])
    and max(killed["checkpoints"]) <= killed["last_logged_step"] < steps,
    "resume_bit_identical": result["run"]["train_records_equal_reference"] and len(got) == steps,
    "selection_recorded": sorted(run_result["selected"]) != [],
    "eval_matches_record": result["eval"]["equal"],
    "rss_ratio_10x": ratio,
    "rss_bounded": ratio <= RSS_TOLERANCE,
  }
  return result


# ----------------------------------------------------------------------- reporting


def markdown(result: dict[str, Any]) -> str:
  """The results as markdown (the README's section is this text without its title)."""
  m = result["metadata"]["machine"]
  checks = result["checks"]
  d1, d10 = result["data"], result["data_10x"]

  def images(d: dict) -> str:
    return " + ".join(f"{v['images']:,} {k}" for k, v in d.items())

  def mb(d: dict) -> float:
    return sum(v["bytes"] for v in d.values()) / 2**20

  run = result["run"]
  sel, cfg = run["selected"], run["config"]
  lines = [
    "# Office-31 at scale: the published ResNet-50 config, end to end",
    "",
    f"Machine: {m.get('cpu_model', '?')}, {m.get('cpu_affinity_count') or m.get('cpu_count')} "
    f"usable cores, load average {result['load_average'][0]:.1f} at the start. Config: "
    f"`{result['config']}` with random weights (`model.pretrained=''`), "
    f"{result['steps']} steps of {cfg['batch_size']} + {cfg['batch_size']} images at "
    f"{cfg['image_size']}x{cfg['image_size']} ({cfg['backbone']}, `data.augment = "
    f"{cfg['augment']!r}`, driver {cfg['driver']}), evaluation and checkpoint every "
    f"{result['every']} steps; data: {images(d1)} generated JPEGs of mixed resolutions "
    f"({mb(d1):.0f} MB), 31 classes; 10x: {images(d10)} ({mb(d10):.0f} MB). "
    f"Written by `python -m benchmarks.office_scale` at commit "
    f"{result['metadata'].get('git_commit', '?')}.",
    "",
    "| phase | what happened | wall s | peak RSS GiB |",
    "|---|---|---:|---:|",
  ]
  k = result["killed"]

  def ended(r: dict) -> str:
    return "SIGKILL once its last step was logged" if r["killed"] else "exited (0)"

  rows = [
    (
      "reference (1x)",
      f"{result['steps']} steps; {ended(result['reference'])}",
      result["reference"],
    ),
    (
      "killed",
      f"SIGKILL {result['kill_delay_s']:g} s after checkpoint {result['every']} was written, "
      f"last step logged {k['last_logged_step']}, checkpoints on disk {k['checkpoints']}",
      k,
    ),
    (
      "resumed",
      f"`--config.train.resume=true`: from step {max(k['checkpoints'], default=0)} to "
      f"{result['steps']}, evaluations at steps {run['history_steps']}",
      result["resumed"],
    ),
    (
      "dtl-jax eval",
      f"--selected {result['eval']['criterion']}: step {result['eval']['step']}, "
      f"{result['eval']['accuracy']:.2f}% on {result['eval']['num_examples']} target images",
      result["eval"],
    ),
    (
      "reference (10x)",
      f"the 1x reference on {images(d10)} images; {ended(result['reference_10x'])}",
      result["reference_10x"],
    ),
  ]
  for name, what, r in rows:
    lines.append(f"| {name} | {what} | {r['wall_s']:.0f} | {gib(r['peak_rss_bytes']):.2f} |")
  t = run["timings"]
  lines += [
    "",
    "Checks: "
    + "; ".join(
      [
        f"killed mid-run: {'yes' if checks['killed_mid_run'] else 'NO'}",
        f"killed + resumed training metrics equal the uninterrupted run's, all "
        f"{run['train_records']} steps: {'PASS' if checks['resume_bit_identical'] else 'FAIL'}",
        f"`dtl-jax eval` reports the accuracy the run recorded for its pick: "
        f"{'PASS' if checks['eval_matches_record'] else 'FAIL'}",
        f"peak RSS of training at 10x / 1x: {checks['rss_ratio_10x']:.3f} "
        f"({'PASS' if checks['rss_bounded'] else 'FAIL'}, bound {RSS_TOLERANCE})",
      ]
    )
    + ".",
    "",
    "Label-free picks (oracle target accuracy of each, random weights, so near chance): "
    + ", ".join(
      f"{c} step {v['step']} ({100 * v['target_acc']:.1f}%)" for c, v in sorted(sel.items())
    )
    + ". The resumed process's phases (s): "
    + ", ".join(f"{k} {v:.0f}" for k, v in t.items() if k != "total_s")
    + ".",
    "",
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=None, help="default 4 (--quick: 20)")
  parser.add_argument("--every", type=int, default=2, help="evaluation / checkpoint interval")
  parser.add_argument(
    "--kill-delay", type=float, default=5.0, help="seconds into the step after the checkpoint"
  )
  parser.add_argument("--scale", type=float, default=10.0, help="size of the large folders")
  parser.add_argument("--quick", action="store_true", help=f"tiny run: {' '.join(QUICK_OVERRIDES)}")
  parser.add_argument("--tmp", default=None, help="working directory (default: a new temp dir)")
  parser.add_argument("--out", default=None, help="default: benchmarks/results/<machine>")
  args = parser.parse_args(argv)
  if args.steps is None:
    args.steps = 20 if args.quick else 4  # quick steps take milliseconds: kill among many
  load = os.getloadavg()
  with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
    result = run(
      Path(tmp),
      steps=args.steps,
      every=args.every,
      kill_delay=0.0 if args.quick else args.kill_delay,
      scale=args.scale,
      quick=args.quick,
    )
  from dtl_jax.provenance import run_metadata

  config = f"{Path(CONFIG).relative_to(ROOT)}"
  result.update(config=config, load_average=list(load), quick=args.quick)
  result["metadata"] = run_metadata()
  out = Path(args.out) if args.out else Path(__file__).parent / "results" / machine_name()
  if not args.quick or args.out:
    print(harness.write_json_md(str(out), "office_scale", result, markdown(result)))
  print(markdown(result))
  return result


if __name__ == "__main__":
  main()
