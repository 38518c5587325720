"""benchmarks.changes: the before / after table against the committed result files.

Nothing is timed: the numbers are read here directly from the committed JSON (the working
tree's file, or ``git show <commit>:<path>``) and compared with the table; the claims
behind the table (which code each run measured, why a change is "not measured") are
checked against the git history, so these tests need a git checkout with its history
(CI runs in a fresh clone).
"""

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import changes

ROOT = Path(changes.ROOT)
RESULTS = ROOT / "benchmarks" / "results"


def _git(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
  )


def _json(path: str, commit: str | None = None) -> dict:
  if commit is None:
    return json.loads((ROOT / path).read_text())
  out = _git("show", f"{commit}:{path}")
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout)


def _contains(code: str, change: str) -> bool:
  """Whether the code at commit ``code`` includes commit ``change``."""
  return _git("merge-base", "--is-ancestor", change, code.removesuffix("+dirty")).returncode == 0


@pytest.fixture(scope="module")
def table() -> list[dict]:
  return changes.build()


def _row(table: list[dict], commit: str, metric: str, threads: int) -> dict:
  found = [
    r for r in table if r["commit"] == commit and r["metric"] == metric and r["threads"] == threads
  ]
  assert len(found) == 1, (commit, metric, threads)
  return found[0]


def test_xla_options_row_is_the_two_variants_of_the_committed_step(table):
  res = _json("benchmarks/results/amd-epyc-2t/results.json")
  (dann,) = [r for r in res["steps"]["rows"] if r["name"] == "LeNet DANN 128+128"]
  median = {v["variant"]: v["median_s"] for v in dann["variants"]}
  row = _row(table, "f7e820a", "LeNet DANN 128+128 step, s", 2)
  assert (row["before"], row["after"]) == (median["jax_xla_default"], median["jax"])
  assert row["speedup"] == pytest.approx(median["jax_xla_default"] / median["jax"])
  # The run's own before / after ratios say the same.
  assert row["speedup"] == pytest.approx(
    dann["ratio_torch_eager_over_library_jax"] / dann["ratio_torch_eager_over_baseline_jax"]
  )


def test_cdan_rows_are_the_committed_e2e_runs_around_8900406(table):
  path = "benchmarks/results/amd-epyc-1t/e2e.json"
  runs = {}
  for commit in ("6fc0e89", "28a48ad"):
    (runs[commit],) = [r for r in _json(path, commit)["rows"] if r["method"] == "cdan"]
  whole = _row(table, "8900406", "e2e CDAN whole run, dtl_jax/PyTorch", 1)
  assert whole["before"] == runs["6fc0e89"]["process_ratio_jax_over_torch"]
  assert whole["after"] == runs["28a48ad"]["process_ratio_jax_over_torch"]
  assert whole["speedup"] == pytest.approx(whole["before"] / whole["after"])
  step = _row(table, "8900406", "e2e CDAN step, PyTorch/dtl_jax", 1)
  assert step["higher_is_better"]
  assert step["speedup"] == pytest.approx(
    runs["28a48ad"]["step_ratio_torch_over_jax"] / runs["6fc0e89"]["step_ratio_torch_over_jax"]
  )


def _run_code(pick: changes.Pick) -> str:
  """The commit of the code whose run wrote the number ``pick`` names."""
  data = _json(f"{changes.RESULTS}/{pick.file}", pick.commit)
  if pick.keys[0] == "profile":
    return data["profile"]["git_commit"]
  kept = data.get("updated_from", {})
  methods = [k[1] for k in pick.keys if isinstance(k, tuple) and k[0] == "method"]
  if methods and methods[0] in kept.get("methods_kept", ()):
    return kept["git_commit"]
  return data["git_commit"]


def _picks(value: changes.Value) -> tuple[changes.Pick, ...]:
  return (value.num, value.den) if isinstance(value, changes.Ratio) else (value,)


def test_before_and_after_runs_measured_code_without_and_with_the_change():
  """Same-run rows: the run's code has the change (its library variant is the after).
  Rows across runs: the before run's code lacks the change, the after run's has it."""
  for c in changes.CHANGES:
    made_by = c.commit.split("+")
    for r in c.rows:
      before = {_run_code(p) for p in _picks(r.before)}
      after = {_run_code(p) for p in _picks(r.after)}
      same_run = {(p.file, p.commit) for p in _picks(r.before) + _picks(r.after)}
      for change in made_by:
        assert all(_contains(code, change) for code in after), (c.name, r.metric, after)
        if len(same_run) > 1:
          assert not any(_contains(code, change) for code in before), (c.name, r.metric)


def test_every_change_is_measured_at_each_thread_count_or_says_why(table):
  for c in changes.CHANGES:
    for commit in c.commit.split("+"):
      assert _git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0, commit
    for threads in changes.THREADS:
      rows = [r for r in table if r["change"] == c.name and r["threads"] in (threads, None)]
      assert rows, (c.name, threads)
    assert all(g.reason for g in c.gaps)
  measured = [r for r in table if "not_measured" not in r]
  assert all(r["before"] > 0 and r["after"] > 0 for r in measured)


def _committed_versions(pattern: str) -> list[tuple[str, str]]:
  """``(commit, path)`` of every committed version of the result files ``pattern``."""
  out = _git("log", "--format=%h", "--name-only", "--diff-filter=AM", "--", pattern).stdout
  versions, commit = [], None
  for line in out.splitlines():
    if line and "/" not in line:
      commit = line
    elif line:
      versions.append((commit, line))
  assert versions, pattern
  return versions


def test_the_not_measured_reasons_hold_in_the_history():
  # 1c897a6 and 9b26891: every committed end-to-end run ran code made after them, and none
  # ran the library's default criteria (--all-criteria).
  for commit, path in _committed_versions("benchmarks/results/*/e2e.json"):
    data = _json(path, commit)
    codes = [data["git_commit"], data.get("updated_from", {}).get("git_commit")]
    for code in filter(None, codes):
      assert _contains(code, "1c897a6") and _contains(code, "9b26891"), (commit, path)
    assert not any("jax_all_criteria" in row for row in data["rows"]), (commit, path)
  # 801b9bf: every committed full run came after it.
  for commit, path in _committed_versions("benchmarks/results/*/results.json"):
    assert _contains(_json(path, commit)["git_commit"], "801b9bf"), (commit, path)


def test_committed_table_is_the_table_of_the_committed_results(table):
  committed = json.loads((RESULTS / "changes.json").read_text())
  assert committed["rows"] == table, "run: python -m benchmarks.changes"
  assert [c["commit"] for c in committed["changes"]] == [c.commit for c in changes.CHANGES]
  assert (RESULTS / "changes.md").read_text() == changes.to_markdown(committed)


def _one(pick: changes.Pick) -> tuple[changes.Change, ...]:
  return (changes.Change("x", "abc", rows=(changes.Row("m", 1, pick, pick),)),)


def test_a_missing_file_commit_or_key_is_named(tmp_path):
  pick = changes.step(1, "LeNet DANN 128+128", "jax")
  with pytest.raises(
    changes.ChangesError, match=r"benchmarks/results/amd-epyc-1t/results\.json is missing"
  ):
    changes.build(_one(pick), root=str(tmp_path))
  with pytest.raises(changes.ChangesError, match=r"amd-epyc-1t/e2e\.json at commit 0123abc "):
    changes.build(_one(changes.e2e_run(1, "dann", "step_s", commit="0123abc")))
  # the 2-thread e2e.json did not exist yet at 970dd6d
  with pytest.raises(changes.ChangesError, match=r"amd-epyc-2t/e2e\.json at commit 970dd6d "):
    changes.build(_one(changes.e2e_run(2, "dann", "step_s", commit="970dd6d")))
  with pytest.raises(changes.ChangesError, match=r"rows\[method=mdd\]: 0 list elements"):
    changes.build(_one(changes.e2e_run(1, "mdd", "step_ratio_torch_over_jax")))
  with pytest.raises(changes.ChangesError, match=r"e2e\.json: profile\.steps\.nope: no such key"):
    changes.build(_one(changes.e2e_profile_step(1, "nope")))
  with pytest.raises(changes.ChangesError, match="is not a positive measured number"):
    changes.build(_one(changes.e2e_run(1, "dann", "jax", "step_s")))  # a dict, not a number
