"""benchmarks/kernels_ab.py: the before / after of the MMD derivative rules.

The A/B swaps the library's rules for plain autodiff at trace time (module globals of
``dtl_jax.losses.kernels`` and ``dtl_jax.losses.mmd``); a refactor of those modules must
not leave the "before" silently equal to the "after". XLA's flop counts show the swaps
took effect: the symmetric-Gram rule removes one ``[2n, 2n] x [2n, d]`` product from the
backward (up to the elementwise sums around it); the weighted-form rule keeps the product
count and removes elementwise flops (its gain is a transposed pass, not flops: the library test
``test_dense_gaussian_backward_is_one_product_per_layer_and_no_transpose`` checks that
structure); the values and gradients agree (``kernels_ab.run`` raises when they differ).
"""

import json

from benchmarks import jax_losses, kernels_ab


def test_quick_ab_removes_one_product_and_writes_its_rows(tmp_path):
  out = kernels_ab.main(["--quick", "--threads", "1", "--out", str(tmp_path / "ab.json")])
  assert json.loads((tmp_path / "ab.json").read_text())["rows"] == json.loads(
    json.dumps(out["rows"])
  )
  assert [r["config"] for r in out["rows"]] == [
    f"{loss} n={n} d={d}" for loss in ("mk_mmd", "jmmd") for n, d in kernels_ab.QUICK
  ] + [f"mk_mmd_tiled n={n} d={d}" for n, d in kernels_ab.QUICK_TILED]
  for r in out["rows"]:
    m, d, f = 2 * r["n"], r["d"], r["xla_flops"]
    product = 2 * m * m * d  # one [m, m] x [m, d] product
    elementwise = 2 * m * (m + d)  # bound on the elementwise terms around it (G + Gᵀ, sums)
    assert set(r["timings"]) == set(kernels_ab.VARIANTS)
    assert f["kernel_jvp"] != f["before"]  # the kernel-sum rule changed the program
    if r["loss"] == "mk_mmd_tiled":
      # Row blocks are not symmetric: the Gram rule does not apply; the weighted-form rule
      # spends one backward product per block where autodiff of the blocks spends two.
      # XLA's cost analysis counts a while loop's body once (jaxlib 0.10) or, where it
      # knows the trip count, once per block: one block's product, or all of them.
      assert f["sym_gram"] == f["before"]
      removed = f["both_rules"] - f["after"]
      per_block = product * min(jax_losses.TILE, m) // m
      # (plus a few elementwise passes over the block: the tolerance is an eighth of it)
      assert min(abs(removed - per_block), abs(removed - product)) <= per_block / 8, (
        r["config"],
        removed,
        per_block,
      )
      continue
    for with_rule, without in (("sym_gram", "before"), ("both_rules", "kernel_jvp")):
      removed = f[without] - f[with_rule]
      assert abs(removed - product) <= elementwise, (r["config"], with_rule, removed, product)
    # The weighted-form rule removes elementwise [m, m] passes (C + Cᵀ, the cotangent's
    # outer product), not a product: fewer flops, by far less than one product.
    assert 0 < f["both_rules"] - f["after"] < product / 4
