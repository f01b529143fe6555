"""The claims report: derived from the registry, verdicts from the rules, Markdown + HTML + JSON, CLI wiring."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flatminima import claims, lab
from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.lab import rules


def test_claim_list_comes_from_the_registry():
    assert claims.claim_ids() == [s.claim for s in lab.specs()]
    known = lab.available()
    for s in lab.specs():
        assert known[s.experiment].startswith(s.claim + ":")


def test_docs_table_lists_every_registered_claim():
    doc = (Path(__file__).parents[1] / "docs" / "claims.md").read_text()
    for s in lab.specs():
        assert f"| {s.claim} |" in doc and f"`{s.experiment}`" in doc


def test_docs_generated_part_matches_the_registry():
    from flatminima.claims import docs

    doc = (Path(__file__).parents[1] / "docs" / "claims.md").read_text()
    assert docs.render() in doc, "run: python -m flatminima.claims.docs docs/claims.md"


def _row(s, verdicts):
    return claims.ClaimRow(s.claim, s.statement, s.experiment, s.kind, s.hypothesis, s.quantity, s.rule, s.power,
                           s.n_full, rules.stable(verdicts), verdicts, ["x = 1 [0.5, 1.5] | y"] * len(verdicts),
                           [[]] * len(verdicts), [[0, 1]] * len(verdicts), 1.0, [])


def test_report_files_have_one_row_per_claim(tmp_path: Path):
    specs = lab.specs()
    rows = [_row(s, ["supported", "supported", "contradicted"]) for s in specs]
    paths = claims.write_reports(rows, tmp_path, quick=False, seed=0)
    md = Path(paths["markdown"]).read_text()
    assert sum(line.startswith("| C") for line in md.splitlines()) == len(specs)
    assert "x = 1 [0.5, 1.5] \\| y" in md  # table cells are escaped
    assert "**inconclusive** (supported, supported, contradicted)" in md  # unstable → inconclusive
    assert Path(paths["html"]).read_text().count("<tr style") == len(specs)
    assert len(json.loads(Path(paths["json"]).read_text())) == len(specs)


def test_run_one_claim_end_to_end(tmp_path: Path):
    rows = claims.run(quick=True, out=tmp_path, only=["C8"], progress=True)
    assert len(rows) == 1 and rows[0].verdict == "demonstration"
    assert rows[0].rule and rows[0].n >= 1
    md = (tmp_path / "claims.md").read_text()
    assert (tmp_path / "claims.html").exists() and ".png)" in md and ".csv)" in md
    assert any(f.endswith(".png") for f in rows[0].files)


def test_full_mode_runs_three_disjoint_seed_sets(tmp_path: Path):
    rows = claims.run(quick=False, out=tmp_path, only=["C8"], progress=False)
    r = rows[0]
    assert len(r.per_seed_set) == 3 and r.seeds == [[0], [1], [2]]


def test_unknown_claim_refused():
    with pytest.raises(FlatminimaError, match="C1"):
        claims.run(only=["C99"], progress=False)


def test_cli_lab_list_and_unknown_name():
    runner = CliRunner()
    res = runner.invoke(app, ["lab", "list", "--json"])
    assert res.exit_code == 0 and "saddle_test" in res.output
    bad = runner.invoke(app, ["lab", "run", "nope"])
    assert bad.exit_code != 0 and isinstance(bad.exception, FlatminimaError)
    assert "known experiments" in str(bad.exception)


def test_parallel_groups_keep_shared_models_together():
    from flatminima.claims.report import _groups

    specs = lab.specs()
    groups = _groups(specs, 2)
    assert len(groups) == 2 and sorted(c for g in groups for c in g) == sorted(s.claim for s in specs)
    shared = {s.claim for s in specs if s.bench_group}
    assert any(shared <= set(g) for g in groups)  # C1, C10, C11, C12, C15 share models: one process
    assert _groups(specs, 1) == [[s.claim for s in specs]]


def test_parallel_run_reports_each_seed_set_as_it_finishes(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("FLATMINIMA_PROGRESS", "plain")
    monkeypatch.setenv("FLATMINIMA_PROGRESS_EVERY", "0")  # a line at every advance
    rows = claims.run(quick=True, repeats=2, workers=2, out=tmp_path, only=["C7", "C8"], progress=True)
    assert [len(r.per_seed_set) for r in rows] == [2, 2]
    err = capsys.readouterr().err
    # one step per finished seed set, not one jump per finished process (which would show only 2/4 and 4/4)
    assert "claims: 1/4" in err and "claims: 3/4" in err, err
