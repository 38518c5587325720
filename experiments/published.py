"""Study 5: published UDA benchmarks -- list the configs and their reference numbers.

``--list`` prints, per benchmark and method, the target accuracies published in the papers
(``REFERENCE``), in TLlib's own benchmark (``TLLIB_REFERENCE``, ResNet-50) and TLlib's
ViT-B/16 runs (``TLLIB_VIT_REFERENCE``), "-" where none; then the foundation-backbone
configs (``<benchmark>:<pair>:<method>:<backbone>``).

  python -m experiments.published --list
  dtl-jax train --config experiments/configs/published.py:office31:A-W:dann \\
      --config.model.pretrained=weights/resnet50.safetensors --workdir runs/office31_AW_dann

The configs need the real datasets and ImageNet weights (README, "Real datasets");
``tests/experiments/test_published.py`` runs each of them on generated mock data with a
tiny model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dtl_jax.config import load_config, load_config_module

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "published.py"

EXAMPLES = (
  "office31:A-W:dann",
  "office_home:Ar-Cl:cdan_e",
  "mnist_usps:M-U:adda",
  "svhn_mnist:S-M:dann",
)
VIT_EXAMPLES = (
  "office_home:Ar-Cl:cdan:vit_b16",
  "office31:A-W:dann:dinov2_b14",
  "office_home:Rw-Pr:mdd:clip_b16",
)


def listing() -> str:
  mod = load_config_module(CONFIG)
  lines = [
    "| benchmark | method | paper target acc. (%) | TLlib target acc. (%) "
    "| TLlib ViT-B/16 target acc. (%) | example config |",
    "|---|---|---|---|---|---|",
  ]
  for bench, methods in mod.REFERENCE.items():
    ex = next(e for e in EXAMPLES if e.startswith(bench + ":"))
    pair = ex.split(":")[1]
    tllib = {**mod.TLLIB_REFERENCE.get(bench, {}), **mod.TLLIB_VIT_REFERENCE.get(bench, {})}
    for m in list(methods) + [m for m in tllib if m not in methods]:
      cols = [
        ", ".join(f"{k} {v:.1f}" for k, v in mod.reference(bench, m, source=s).items()) or "-"
        for s in ("paper", "tllib", "tllib_vit")
      ]
      lines.append(
        f"| {bench} | {m} | {cols[0]} | {cols[1]} | {cols[2]} | `published.py:{bench}:{pair}:{m}` |"
      )
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  p.add_argument("--list", action="store_true", help="print configs and reference numbers")
  p.parse_args(argv)
  if True:  # --list is the only action
    print(listing())
    for ex in EXAMPLES + VIT_EXAMPLES:
      c = load_config(f"{CONFIG}:{ex}")
      print(
        f"\n{ex}: {c.data.source} -> {c.data.target}, {c.model.backbone}, "
        f"{c.train.num_steps} steps, batch {c.data.batch_size}, pretrained "
        f"{c.model.pretrained or '-'}"
      )
  return 0


if __name__ == "__main__":
  sys.exit(main())
