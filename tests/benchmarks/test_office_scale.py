"""The Office-31-scale benchmark's machinery, at toy size (``--quick``).

``benchmarks/office_scale.py`` drives ``dtl-jax train`` / ``eval`` in child processes:
kill with SIGKILL, resume, compare with an uninterrupted run, evaluate the label-free pick.
Its committed results came from the full run; this test runs every phase on tiny folders
(LeNet at 32x32) so that a change to the CLI, the workdir layout or the resume path that
breaks the benchmark (or the guarantees it checks) fails here.
"""

import json

import numpy as np
import pytest

from benchmarks import office_scale


def test_folders_are_deterministic_and_sized(tmp_path):
  a = office_scale.make_office_folders(tmp_path / "a", scale=0.02, classes=3, processes=1)
  b = office_scale.make_office_folders(tmp_path / "b", scale=0.02, classes=3, processes=2)
  assert a == b  # the split of the work over processes does not change the files
  assert {k: v["images"] for k, v in a.items()} == {"amazon": 56, "webcam": 16}
  files = sorted((tmp_path / "a" / "office31" / "amazon" / "images").glob("*/*.jpg"))
  assert len(files) == 56 and len({f.parent.name for f in files}) == 3
  from PIL import Image

  sizes = {Image.open(f).size for f in files}
  assert sizes <= set(office_scale.SIZES) and len(sizes) > 1  # mixed resolutions
  for f in files[:5]:
    same = tmp_path / "b" / f.relative_to(tmp_path / "a")
    assert f.read_bytes() == same.read_bytes()


@pytest.mark.slow
def test_quick_run_kills_resumes_and_evaluates(tmp_path, monkeypatch):
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # children: compile time dominates
  result = office_scale.main(["--quick", "--scale", "3", "--out", str(tmp_path / "out")])
  checks = result["checks"]
  assert checks["killed_mid_run"] and result["killed"]["returncode"] == -9
  assert checks["resume_bit_identical"]  # every step's losses, killed + resumed == reference
  assert result["run"]["train_records"] == result["steps"] == 20
  assert result["run"]["history_steps"] == list(range(2, 21, 2))
  assert checks["eval_matches_record"]
  assert 0 <= result["eval"]["accuracy"] <= 100 and result["eval"]["num_examples"] == 80
  assert [result["data"]["amazon"]["images"], result["data_10x"]["amazon"]["images"]] == [
    round(office_scale.DOMAINS["amazon"] * 0.1),  # --quick folders: a tenth of Office-31
    round(office_scale.DOMAINS["amazon"] * 0.1 * 3),  # --scale 3
  ]
  for phase in ("reference", "killed", "resumed", "eval", "reference_10x"):
    assert 50 * 2**20 < result[phase]["peak_rss_bytes"] < 8 * 2**30, phase
  assert np.isclose(
    checks["rss_ratio_10x"],
    result["reference_10x"]["peak_rss_bytes"] / result["reference"]["peak_rss_bytes"],
  )
  written = json.loads((tmp_path / "out" / "office_scale.json").read_text())
  assert written["checks"] == checks
  md = (tmp_path / "out" / "office_scale.md").read_text()
  assert md == office_scale.markdown(written) and "PASS" in md
