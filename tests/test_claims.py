"""The claims report: one row per claim, verdicts from the lab, Markdown + HTML + JSON output, CLI wiring."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flatminima import claims, lab
from flatminima.cli import app
from flatminima.errors import FlatminimaError


def test_claims_cover_c1_to_c17_with_registered_experiments():
    assert list(claims.CLAIMS) == [f"C{i}" for i in range(1, 18)]
    known = lab.available()
    for cid, (_, name) in claims.CLAIMS.items():
        assert name in known and known[name].startswith(cid + ":")


def test_report_files_have_one_row_per_claim(tmp_path: Path):
    rows = [
        claims.ClaimRow(c, s, e, "x = 1 [0.5, 1.5]", "mixed", "why | not", 1.0, [])
        for c, (s, e) in claims.CLAIMS.items()
    ]
    paths = claims.write_reports(rows, tmp_path, quick=True, seed=0)
    md = Path(paths["markdown"]).read_text()
    assert sum(line.startswith("| C") for line in md.splitlines()) == 17
    assert "why \\| not" in md  # table cells are escaped
    assert Path(paths["html"]).read_text().count("<tr style") == 17
    assert len(json.loads(Path(paths["json"]).read_text())) == 17


def test_run_one_claim_end_to_end(tmp_path: Path):
    rows = claims.run(quick=True, out=tmp_path, only=["C8"], progress=True)
    assert len(rows) == 1 and rows[0].verdict in ("supported", "not supported", "mixed", "not testable here")
    assert (tmp_path / "claims.md").exists() and (tmp_path / "claims.html").exists()
    assert any(f.endswith(".png") for f in rows[0].files)


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
