"""Does the input pipeline keep up? Images/s delivered at 224x224 next to a training step.

Measures, on this machine:

1. images per second that :class:`dtl_jax.data.pipeline.TrainBatches` delivers from a
   folder of JPEGs (``--images`` generated files of ``--size`` pixels, default 2,000 of
   500x375, about Office-31 / Office-Home photos, in 31 class folders), through TLlib's
   training transform (``data.augment = "tllib_imagenet"``: decode, resize 256,
   random-resized crop 224, flip, ImageNet normalization), 32 source + 32 target images
   per step, with grain decoding in 1 and 2 threads and in 1 and 2 worker processes;
   next to the pipeline it replaced (``PairSampler`` with a thread pool per batch and
   the background ``Prefetcher``, no grain);
2. the time of one ResNet-50 DANN training step on 32 + 32 images at 224x224 on the CPU
   (random weights, float32, ``jax.jit``; compile time reported separately; only
   ``--resnet-steps`` steps are timed, default 2, since one takes tens of seconds on 2
   cores);
3. the published throughput of one accelerator (:data:`ACCELERATOR`, with its source),

and writes ``input_pipeline.json`` / ``input_pipeline.md`` under
``benchmarks/results/<machine>/`` so that a reader can see how many decoding workers a
GPU host needs: ``accelerator images/s / images/s of one worker``.

    python -m benchmarks.input_pipeline                # about 5 minutes on 2 cores
    python -m benchmarks.input_pipeline --quick        # smoke run (tiny, no ResNet-50)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness

#: Published training throughput of one accelerator: ResNet-50 v1.5, PyTorch, mixed
#: precision, 1 x A100 80GB (DGX A100), pytorch-21.03 NGC container.
ACCELERATOR = {
  "device": "1 x NVIDIA A100 80GB (DGX A100), mixed precision",
  "model": "ResNet-50 v1.5 training (PyTorch)",
  "images_per_second": 2470.0,
  "source": (
    "NVIDIA/DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md "
    "(commit 291f0d02e815b148fa5c2b81bf07aa3552142895), 'Training performance: NVIDIA "
    "DGX A100 (8x A100 80GB)', 1 GPU, 'Throughput - mixed precision' (TF32: 938 img/s)"
  ),
}

#: (label, workers, threads): grain configurations measured.
GRAIN_CONFIGS = (
  ("grain, in the consumer's thread", 0, 0),
  ("grain, 1 thread", 0, 1),
  ("grain, 2 threads", 0, 2),
  ("grain, 1 worker process", 1, 1),
  ("grain, 2 worker processes", 2, 1),
)


def photo_like(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
  """A ``[h, w, 3]`` uint8 image that compresses about as a photo does: a smooth random
  colour field (bicubic upsampling of a 12x16 grid) plus uniform noise of +-20."""
  from PIL import Image

  coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
  img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.int16)
  return np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)


def make_jpeg_folder(root: Path, *, images: int, size: tuple[int, int], classes: int = 31) -> int:
  """``images`` JPEGs (quality 90) of ``size = (w, h)`` in ``classes`` folders
  (:func:`photo_like` images).

  Returns:
    the total size of the files in bytes.
  """
  from PIL import Image

  rng = np.random.default_rng(0)
  w, h = size
  total = 0
  for i in range(images):
    folder = root / f"class_{i % classes:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{i:05d}.jpg"
    Image.fromarray(photo_like(rng, w, h)).save(path, quality=90)
    total += path.stat().st_size
  return total


def _time_stream(it: Any, steps: int, batch_images: int) -> dict[str, float]:
  """Wall-clock images/s after the first batch, and this process's CPU seconds per image
  (all its threads; decoding in worker processes is not counted)."""
  t0 = time.perf_counter()
  next(it)  # the first batch: worker start-up, imports
  t1, c1 = time.perf_counter(), time.process_time()
  for _ in range(steps):
    b = next(it)
    assert b["x_s"].shape[1:] == (224, 224, 3)
  t2, c2 = time.perf_counter(), time.process_time()
  return {
    "first_batch_s": t1 - t0,
    "seconds": t2 - t1,
    "images_per_second": steps * batch_images / (t2 - t1),
    "process_cpu_ms_per_image": 1e3 * (c2 - c1) / (steps * batch_images),
  }


def measure_pipelines(root: Path, *, steps: int, batch: int, prefetch: int) -> list[dict[str, Any]]:
  """Images/s of each grain configuration and of the PairSampler baseline."""
  from dtl_jax.data import ImageFolder, PairSampler, pipeline
  from dtl_jax.data.streaming import LazyImages

  folder = ImageFolder(str(root))
  x = LazyImages(folder, example_shape=(224, 224, 3))
  train_tf, _ = pipeline.augmentation("tllib_imagenet", image_size=224)
  rows = []
  for label, workers, threads in GRAIN_CONFIGS:
    batches = pipeline.TrainBatches(
      x,
      folder.labels,
      x,
      batch_size=batch,
      target_batch_size=batch,
      seed=0,
      transform=train_tf,
    )
    it = batches.stream(0, steps + 1, threads=threads, prefetch=prefetch, workers=workers)
    try:
      r = _time_stream(it, steps, 2 * batch)
    finally:
      it.close()
    rows.append({"pipeline": label, "workers": workers, "threads": threads, **r})
    print(f"{label:32s} {r['images_per_second']:7.1f} images/s", flush=True)
  for threads in (1, 2):
    src = ImageFolder(str(root), transform=train_tf)
    sampler = PairSampler(
      src, src, batch_size=batch, target_batch_size=batch, seed=0, num_workers=threads
    )
    pf = sampler.prefetch(prefetch)
    it = ({"x_s": b.x_source, "x_t": b.x_target} for b in pf)
    try:
      r = _time_stream(it, steps, 2 * batch)
    finally:
      pf.close()
    label = f"PairSampler + Prefetcher, {threads} thread{'s' * (threads > 1)} (no grain)"
    rows.append({"pipeline": label, "workers": 0, "threads": threads, **r})
    print(f"{label:32s} {r['images_per_second']:7.1f} images/s", flush=True)
  return rows


def measure_resnet50_step(*, batch: int, steps: int) -> dict[str, Any]:
  """Seconds per ResNet-50 DANN step on ``batch`` + ``batch`` images at 224x224."""
  import jax

  from dtl_jax import methods, models, xla_options
  from dtl_jax.config import default_config
  from dtl_jax.train import create_train_state, make_train_step

  c = default_config()
  c.model.backbone = "resnet50"
  c.model.bottleneck_dim = 256
  model = models.build(c.model, num_classes=31)
  method = methods.build("dann")
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 224, 224, 3)).astype(np.float32)
  state, tx = create_train_state(model, method, key=jax.random.key(0), example_x=x, **dict(c.optim))
  # compiled as fit compiles it: with the library's XLA options (dtl_jax.xla_options)
  step = jax.jit(
    make_train_step(model, method, tx, total_steps=1000),
    donate_argnums=(0,),
    compiler_options=xla_options.step_compiler_options(),
  )
  batch_data = {
    "x_s": rng.standard_normal((batch, 224, 224, 3)).astype(np.float32),
    "y_s": rng.integers(0, 31, batch).astype(np.int32),
    "x_t": rng.standard_normal((batch, 224, 224, 3)).astype(np.float32),
  }
  t0 = time.perf_counter()
  state, metrics = step(state, batch_data)
  jax.block_until_ready(metrics)
  compile_and_first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step(state, batch_data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  per_step = float(np.median(times))
  print(f"ResNet-50 DANN step ({batch}+{batch}): {per_step:.1f} s", flush=True)
  return {
    "batch": f"{batch}+{batch}",
    "timed_steps": steps,
    "step_seconds": times,
    "median_step_seconds": per_step,
    "images_per_second": 2 * batch / per_step,
    "compile_and_first_step_seconds": compile_and_first,
  }


def machine_name() -> str:
  from dtl_jax.provenance import cpu_model

  slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return f"{slug}-{cores}c"


def markdown(result: dict[str, Any]) -> str:
  m = result["metadata"]["machine"]
  acc = result["accelerator"]
  lines = [
    "# Input pipeline: images/s at 224x224 against a training step",
    "",
    f"Machine: {m['cpu_model']}, {m.get('cpu_affinity_count', m['cpu_count'])} usable "
    f"cores; load average {result['load_average'][0]:.1f} when the run started (the "
    "machine is shared). Data: "
    f"{result['images']} generated JPEGs of {result['size'][0]}x{result['size'][1]} "
    f"({result['mean_file_kb']:.0f} KB on average), TLlib's training transform "
    f"(`data.augment = 'tllib_imagenet'`), {result['batch']} + {result['batch']} images "
    f"per step, {result['steps']} steps timed after the first batch, prefetch "
    f"{result['prefetch']}.",
    "",
    "| pipeline | images/s | CPU ms / image (this process) | first batch (s) |",
    "|---|---:|---:|---:|",
  ]
  for r in result["pipelines"]:
    cpu = "(in the workers)" if r["workers"] else f"{r['process_cpu_ms_per_image']:.1f}"
    lines.append(
      f"| {r['pipeline']} | {r['images_per_second']:.0f} | {cpu} | {r['first_batch_s']:.1f} |"
    )
  lines += ["", "| training step | images/s | source |", "|---|---:|---|"]
  if result.get("resnet50_step"):
    s = result["resnet50_step"]
    lines.append(
      f"| ResNet-50 DANN step {s['batch']} on this CPU (float32, median of "
      f"{s['timed_steps']} timed steps: {s['median_step_seconds']:.1f} s/step; compile + "
      f"first step {s['compile_and_first_step_seconds']:.0f} s) | "
      f"{s['images_per_second']:.1f} | measured |"
    )
  lines.append(
    f"| {acc['model']}, {acc['device']} | {acc['images_per_second']:.0f} | {acc['source']} |"
  )
  need = result["workers_needed"]
  lines += [
    "",
    f"Decoding and augmenting one image costs {need['cpu_ms_per_image']:.1f} ms of CPU "
    f"here (decoding in the consumer's thread), so one core delivers "
    f"{need['per_core_images_per_second']:.0f} images/s and feeding that accelerator "
    f"takes about {need['cores']} decoding workers (`data.workers`, one core each) -- "
    f"{need['note']}",
    "",
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=2000)
  parser.add_argument("--size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
  parser.add_argument("--steps", type=int, default=15, help="timed steps per pipeline")
  parser.add_argument("--batch", type=int, default=32, help="source (= target) batch")
  parser.add_argument("--prefetch", type=int, default=2)
  parser.add_argument("--resnet-steps", type=int, default=2)
  parser.add_argument("--quick", action="store_true", help="tiny sizes, no ResNet-50 step")
  parser.add_argument("--out", default=None, help="default: benchmarks/results/<machine>")
  args = parser.parse_args(argv)
  if args.quick:
    args.images, args.steps, args.batch, args.resnet_steps = 64, 2, 4, 0
  load = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / "jpegs"
    nbytes = make_jpeg_folder(root, images=args.images, size=tuple(args.size))
    pipelines = measure_pipelines(root, steps=args.steps, batch=args.batch, prefetch=args.prefetch)
  step = (
    measure_resnet50_step(batch=args.batch, steps=args.resnet_steps) if args.resnet_steps else None
  )
  from dtl_jax.provenance import run_metadata

  inline = next(r for r in pipelines if r["workers"] == 0 and r["threads"] == 0)
  cpu_ms = inline["process_cpu_ms_per_image"]
  result: dict[str, Any] = {
    "images": args.images,
    "size": list(args.size),
    "mean_file_kb": nbytes / args.images / 1024,
    "batch": args.batch,
    "steps": args.steps,
    "prefetch": args.prefetch,
    "load_average": list(load),
    "pipelines": pipelines,
    "resnet50_step": step,
    "accelerator": ACCELERATOR,
    "workers_needed": {
      "cpu_ms_per_image": cpu_ms,
      "per_core_images_per_second": 1e3 / cpu_ms,
      "cores": math.ceil(ACCELERATOR["images_per_second"] * cpu_ms / 1e3),
      "note": (
        "an upper bound on the demand: a DANN step on 32 + 32 images keeps an A100 "
        "less busy than the 256-image batches of the published number, and the "
        "bottleneck / discriminator add little compute. The wall-clock rates above are "
        "lower than one core's rate times the decoders when the machine is shared (see "
        "the load average)."
      ),
    },
    "metadata": run_metadata(),
  }
  out = Path(args.out) if args.out else Path(__file__).parent / "results" / machine_name()
  if not args.quick or args.out:
    out.mkdir(parents=True, exist_ok=True)
    print(harness.write_json_md(str(out), "input_pipeline", result, markdown(result)))
  print(markdown(result))
  return result


if __name__ == "__main__":
  main()
