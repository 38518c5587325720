"""benchmarks/kernels_ab.py: the before / after of the kernel derivative rules (7a6a0c5).

The A/B swaps the library's rules for plain autodiff at trace time (module globals of
``dtl_jax.losses.kernels``); a refactor of that module must not leave the "before"
silently equal to the "after". XLA's flop counts show the swap took effect: the
symmetric-Gram rule removes one ``[2n, 2n] x [2n, d]`` product from the backward (up
to the elementwise sums around it), and the values and gradients agree
(``kernels_ab.run`` raises when they differ).
"""

import json

from benchmarks import kernels_ab


def test_quick_ab_removes_one_product_and_writes_its_rows(tmp_path):
  out = kernels_ab.main(["--quick", "--threads", "1", "--out", str(tmp_path / "ab.json")])
  assert json.loads((tmp_path / "ab.json").read_text())["rows"] == json.loads(
    json.dumps(out["rows"])
  )
  assert [r["config"] for r in out["rows"]] == [
    f"{loss} n={n} d={d}" for loss in ("mk_mmd", "jmmd") for n, d in kernels_ab.QUICK
  ]
  for r in out["rows"]:
    m, d, f = 2 * r["n"], r["d"], r["xla_flops"]
    product = 2 * m * m * d  # one [m, m] x [m, d] product
    elementwise = 2 * m * (m + d)  # bound on the elementwise terms around it (G + Gᵀ, sums)
    for with_rule, without in (("sym_gram", "before"), ("after", "kernel_jvp")):
      removed = f[without] - f[with_rule]
      assert abs(removed - product) <= elementwise, (r["config"], with_rule, removed, product)
    assert f["kernel_jvp"] != f["before"]  # the kernel-sum rule changed the program too
    assert set(r["timings"]) == set(kernels_ab.VARIANTS)
