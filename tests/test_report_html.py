"""The report from a store with known relations: verdicts, CSV, and the page in headless Chromium."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess

import pytest

from flatminima.report import build_report
from flatminima.study import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _make_store(folder, *, reached=lambda i, seed: True, baseline=False, unconverged=()):
    """12 finished runs (6 configurations × 2 seeds) whose λ_max rises with the gap (flatter = smaller gap)
    and falls with test accuracy (sharper = more accurate); trace vs shift drop is a scrambled order."""
    with Store(folder) as store:
        store.set_meta(
            "spec",
            {
                "name": "synthetic",
                "data": {"name": "mnist1d"},
                "models": {"mlp": {}},
                "recipe": {"lr": [0.01, 0.1, 1.0], "weight_decay": [0, 0.1]},
                "seeds": 2,
                "evaluate": {"ece_bins": 15},
            },
        )
        store.set_meta("axes", {"lr": [0.01, 0.1, 1.0], "weight_decay": [0, 0.1]})
        store.set_meta("data_info", {"train_size": 100, "test_size": 50})
        rows = []
        for i, (lr, wd, seed) in enumerate(
            (a, b, s) for a in (0.01, 0.1, 1.0) for b in (0, 0.1) for s in (0, 1)
        ):
            lam = 1 + i + 0.1 * seed
            ok = reached(i // 2, seed)
            res = {
                "measures": {
                    "lambda_max": {"value": lam, "stderr": 0.0, "cost": {}},
                    "trace": {"value": float(i), "stderr": 0.1, "cost": {}},
                },
                "metrics": {
                    "gap": 0.01 * lam,
                    "test_acc": 0.5 + 0.02 * lam,
                    "train_acc": 0.9,
                    "ece": 0.1 - 0.003 * lam,
                    "shift_drop": float((5 * i) % 12),
                },
                "training": {
                    "epochs_run": 10 + i if ok else 50,
                    "final_train_loss": 0.01 if ok else 0.3,
                    "reached_target": ok,
                    "target_train_loss": 0.01,
                },
                "seconds": {"total": 1.0},
            }
            if i in unconverged:  # a row written with the convergence flag (older rows above lack it)
                res["measures"]["lambda_max"].update(converged=False, config={"max_iter": 2}, extra={"iterations": 2})
            if baseline:
                res["measures"]["param_norm"] = {"value": float((7 * i) % 12), "stderr": 0.0, "cost": {}}
            cfg = {
                "model": "mlp",
                "model_options": {},
                "recipe": {"lr": lr, "weight_decay": wd},
                "seed": seed,
            }
            rows.append((f"r{i}", "x", seed, cfg, res))
        store.add_runs((rid, label, seed, cfg) for rid, label, seed, cfg, _ in rows)
        for rid, *_, res in rows:
            assert store.claim(rid) and store.finish(rid, res)
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(_make_store(tmp_path_factory.mktemp("study")), samples=2000)


def _row(rep, measure, target):
    return next(r for r in rep.table if r["measure"] == measure and r["target"] == target)


def test_verdicts_follow_the_planted_relations(report):
    assert _row(report, "lambda_max", "gap")["verdict"] == "flatter went with smaller gaps"
    assert _row(report, "lambda_max", "test_acc")["verdict"] == "sharper went with higher test accuracy"
    assert _row(report, "lambda_max", "ece")["verdict"] == "sharper went with better calibration (lower ECE)"
    assert _row(report, "lambda_max", "gap")["granulated_tau"] == pytest.approx(1.0)
    assert (
        _row(report, "trace", "shift_drop")["tau_low"] < 0 < _row(report, "trace", "shift_drop")["tau_high"]
    )
    assert _row(report, "trace", "shift_drop")["verdict"] == "inconclusive"
    assert _row(report, "trace", "shift_drop")["kind"] == "inconclusive"


def test_page_states_method_multiplicity_exclusion_and_run_quality(report):
    page = report.html.read_text()
    assert "cluster bootstrap over configurations" in page and "Holm–Bonferroni" in page
    assert "Exclusion rule" in page and "Monte-Carlo" in page and f"{report.method['resamples']} resamples" in page
    assert "Run quality" in page and "No run missed the target train loss." in page
    assert len(report.quality) == 6 and all(q["reached"] == 2 for q in report.quality)
    assert report.method["m_tests"] == 8 and report.method["resamples"] >= 2000
    # the Holm-adjusted interval is wider than the unadjusted one and decides the verdict
    r = _row(report, "lambda_max", "gap")
    assert r["tau_adj_low"] <= r["tau_low"] and r["adj_level"] > 0.95


def test_runs_that_missed_the_target_are_listed_and_left_out(tmp_path):
    folder = _make_store(tmp_path / "s", reached=lambda c, seed: not (c == 0 and seed == 1), baseline=True)
    rep = build_report(folder, samples=2000)
    assert [(r["label"], r["seed"]) for r in rep.excluded] == [("lr=0.01 weight_decay=0", 1)]
    assert all(r["n"] == 11 for r in rep.table) and rep.concluded
    assert any("1 of 12 runs missed the target" in n for n in rep.notes)
    assert rep.quality[0]["reached"] == 1
    base = [r for r in rep.table if r["measure"] == "param_norm"]
    assert base and all(r["baseline"] for r in base)
    assert any("best baseline param_norm" in s for s in rep.summary)
    page = rep.html.read_text()
    assert "(baseline)" in page and "lr=0.01 weight_decay=0 seed 1" in page


def test_fewer_than_three_configurations_reaching_the_target_cannot_conclude(tmp_path):
    folder = _make_store(tmp_path / "s", reached=lambda c, seed: c < 2)
    rep = build_report(folder, samples=500)
    assert not rep.concluded and rep.table == [] and rep.figures == []
    assert "only 2 configuration(s)" in rep.notes[0]
    page = rep.html.read_text()
    assert "Run quality" in page and "cannot conclude" in page and len(rep.excluded) == 8


def test_legend_values_sort_numerically():
    from flatminima.report.figures import pick_axes, sort_values

    assert sort_values([256, 16, 64, 16]) == [16, 64, 256]
    assert sort_values(["b", 2, 10]) == [2, 10, "b"]
    rows = [dict(lr=a, wd=b, bs=16) for a in (1, 2, 3) for b in (0, 1)]
    assert pick_axes(rows, ["wd", "lr", "bs"]) == ("lr", "wd")


def test_csv_and_figures_are_written(report):
    with report.csv.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 * 4
    assert {"tau", "tau_low", "tau_high", "rho", "rho_low", "rho_high", "granulated_tau", "psi[lr]"} <= set(
        table[0]
    )
    pngs = [f for f in report.figures if f.endswith(".png")]
    assert len(pngs) == 2 * 4 + 1 and all(f.replace(".png", ".svg") in report.figures for f in pngs)


def test_page_is_self_contained(report):
    page = report.html.read_text()
    assert not re.search(r"https?://", page), "the page must not reference any URL"
    assert not re.search(r"<link|<script\s+src|@import|url\(", page)
    srcs = re.findall(r'<img[^>]*src="([^"]{0,30})', page)
    assert len(srcs) == 9 and all(s.startswith("data:image/png;base64,") for s in srcs)


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"
)
def test_page_renders_every_figure_in_headless_chromium(report, tmp_path):
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # any request for a host would fail, not leave the machine
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        report.html.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    check = re.search(r'<pre id="image-check"[^>]*>(.*?)</pre>', dom, re.S)
    assert check, "the page's onload check did not run"
    sizes = [line.rsplit(" ", 1) for line in check.group(1).strip().splitlines()]
    assert len(sizes) == 9
    for name, size in sizes:
        w, h = map(int, size.split("x"))
        assert w > 100 and h > 100, f"figure {name} did not render ({size})"


def test_unconverged_values_are_noted_and_marked_and_old_rows_still_load(tmp_path, report):
    assert not any("did not converge" in n for n in report.notes)  # rows without the flag: nothing claimed
    with (report.html.parent / "runs.csv").open() as fh:
        assert {r["unconverged"] for r in csv.DictReader(fh)} == {""}
    rep = build_report(_make_store(tmp_path / "s", unconverged=(0, 5)), samples=500)
    note = next(n for n in rep.notes if "did not converge" in n)
    assert note.startswith("2 measured value(s) did not converge") and "kept in the correlations" in note
    assert "lr=0.01 weight_decay=0 seed=0: lambda_max" in note and "lr=0.1 weight_decay=0 seed=1: lambda_max" in note
    assert all(r["n"] == 12 for r in rep.table if r["measure"] == "lambda_max")  # kept, as the note says
    with (rep.html.parent / "runs.csv").open() as fh:
        marks = [r["unconverged"] for r in csv.DictReader(fh)]
    assert marks == ["lambda_max"] + [""] * 4 + ["lambda_max"] + [""] * 6
    assert "did not converge" in rep.html.read_text()


def test_report_shows_progress_in_plain_lines_off_a_terminal(tmp_path, capsys):
    rep = build_report(_make_store(tmp_path / "s"), samples=2000, progress=True)
    err = capsys.readouterr().err
    total = len(rep.table)
    assert f"report (statistics and figures): {total}/{total} (100%)" in err
    assert f"0/{total} (0%)" in err
