"""ViT-S/16 forward + backward at 224x224: JAX (jit) vs the same ``transformers`` model eager.

    python -m benchmarks.vit_speed [--threads 1] [--batch 8] [--samples 3]

Both frameworks run the same architecture with the same weights: a ``transformers``
``ViTModel`` (hidden 384, 12 layers, 6 heads, MLP 1536, patch 16; its default SDPA
attention, no pooler) with its random initialization, converted to
:class:`dtl_jax.models.VisionTransformer` by :func:`dtl_jax.models.load_hf_vision`. One
step = forward of ``[batch, 224, 224, 3]`` images, loss ``mean(features @ w)`` on the CLS
features (``w [384]`` a fixed random vector), gradients w.r.t. every parameter
(``jax.jit(jax.value_and_grad)`` vs ``torch.autograd.grad`` in eager mode), no optimizer
update. The losses of both are compared (same weights, same images) before timing.
Forward-only rows (``*_forward``: ``jax.jit`` of the forward, ``torch.no_grad`` forward)
are timed alongside.

Threads are pinned before ``jax`` / ``torch`` are imported (:func:`benchmarks.harness.pin_threads`:
CPU affinity, ``torch.set_num_threads``, and for one thread
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``). Timing is
:func:`benchmarks.harness.time_alternating` (warm-up, then the implementations round-robin,
one call per sample). Writes ``benchmarks/results/<machine>/vit_speed.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Any

from benchmarks import harness  # stdlib only at import: threads are pinned before jax/torch

VIT_S16 = {
  "hidden_size": 384,
  "num_hidden_layers": 12,
  "num_attention_heads": 6,
  "intermediate_size": 1536,
  "image_size": 224,
  "patch_size": 16,
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.vit_speed",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--threads", type=int, default=1, help="cores for each framework (default 1)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--samples", type=int, default=3, help="timed steps per framework")
  p.add_argument(
    "--out", default=None, help="output JSON (default benchmarks/results/<machine>/vit_speed.json)"
  )
  return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  settings = harness.pin_threads(args.threads)
  harness.set_torch_threads(settings["threads"])
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers

  from dtl_jax.models import load_hf_vision, vit_from_hf_config
  from dtl_jax.provenance import git_commit

  t_start = time.time()
  load_start = os.getloadavg()
  torch.manual_seed(0)
  config = transformers.ViTConfig(**VIT_S16)
  torch_model = transformers.ViTModel(config, add_pooling_layer=False).eval()
  model = vit_from_hf_config(config.to_dict())
  variables = load_hf_vision(torch_model.state_dict(), model)
  n_params = sum(p.numel() for p in torch_model.parameters())

  x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
  x_torch = torch.from_numpy(x)
  x_jax = jnp.asarray(x.transpose(0, 2, 3, 1))
  params_torch = list(torch_model.parameters())
  w = np.random.default_rng(1).standard_normal(VIT_S16["hidden_size"]).astype(np.float32)
  w_torch, w_jax = torch.from_numpy(w), jnp.asarray(w)

  def torch_step():
    feats = torch_model(x_torch).last_hidden_state[:, 0]
    loss = (feats @ w_torch).mean()
    grads = torch.autograd.grad(loss, params_torch)
    return loss, grads

  def loss_fn(params, x):
    feats = model.apply({"params": params}, x, train=False)["features"]
    return jnp.mean(feats @ w_jax)

  compiled, compile_s = harness.jax_compile_seconds(
    jax.value_and_grad(loss_fn), variables["params"], x_jax
  )

  def jax_step():
    return harness.block(compiled(variables["params"], x_jax))

  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)["features"])

  def jax_forward():
    return harness.block(forward(variables["params"], x_jax))

  def torch_forward():
    with torch.no_grad():
      return torch_model(x_torch).last_hidden_state[:, 0]

  loss_jax = float(jax_step()[0])
  loss_torch = float(torch_step()[0].detach())
  rel = abs(loss_jax - loss_torch) / abs(loss_torch)
  if rel > 1e-4:
    raise SystemExit(f"losses differ: jax {loss_jax}, torch {loss_torch}")

  np.testing.assert_allclose(np.asarray(jax_forward()), torch_forward().numpy(), atol=1e-3)
  timings = harness.time_alternating(
    {
      "jax_jit": jax_step,
      "torch_eager": torch_step,
      "jax_jit_forward": jax_forward,
      "torch_eager_forward": torch_forward,
    },
    repeats=args.samples,
    warmup=1,
    min_sample_s=0.0,
    max_inner=1,
  )
  rows = {}
  for name, t in timings.items():
    row = t.as_dict()
    row["steps_per_s"] = 1.0 / t.median_s
    row["images_per_s"] = args.batch / t.median_s
    rows[name] = row
  machine = harness.machine_info(settings)
  machine["transformers"] = transformers.__version__
  machine["load_average_at_end"] = os.getloadavg()
  result = {
    "benchmark": "vit_s16_forward_backward",
    "git_commit": git_commit(),
    "machine_slug": harness.machine_slug(settings["threads"]),
    "machine": machine,
    "command": "python -m benchmarks.vit_speed " + " ".join(sys.argv[1:] if argv is None else argv),
    "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "config": {
      "model": "ViT-S/16",
      **VIT_S16,
      "parameters": n_params,
      "batch": args.batch,
      "input": [args.batch, 224, 224, 3],
      "dtype": "float32",
      "torch_attention": torch_model.config._attn_implementation,
      "step": "forward + loss mean(cls @ w) + gradients of all parameters",
      "samples": args.samples,
      "load_average_at_start": load_start,
    },
    "loss": {"jax": loss_jax, "torch": loss_torch, "relative_difference": rel},
    "jax_compile_s": compile_s,
    "timings": rows,
    "torch_over_jax_time": rows["torch_eager"]["median_s"] / rows["jax_jit"]["median_s"],
    "torch_over_jax_time_forward": (
      rows["torch_eager_forward"]["median_s"] / rows["jax_jit_forward"]["median_s"]
    ),
    "wall_s": round(time.time() - t_start, 1),
  }
  root = os.path.dirname(os.path.abspath(__file__))
  out = args.out or os.path.join(root, "results", result["machine_slug"], "vit_speed.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  for name, row in rows.items():
    print(
      f"{name:20s} {row['median_s']:.3f} s/step (IQR {row['q1_s']:.3f}-{row['q3_s']:.3f}, "
      f"{row['samples']} samples)  {row['steps_per_s']:.3f} steps/s  "
      f"{row['images_per_s']:.2f} img/s"
    )
  print(
    f"torch / jax time: {result['torch_over_jax_time']:.2f}x; jax compile {compile_s:.1f} s; "
    f"loss rel. diff {rel:.1e}; wrote {out}"
  )
  return result


if __name__ == "__main__":
  main()
