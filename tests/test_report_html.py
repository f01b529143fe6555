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


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """12 finished runs whose λ_max rises with the gap (flatter = smaller gap) and falls with test accuracy
    (sharper = more accurate); trace vs shift drop is a scrambled order (τ = 0.15, p = 0.55)."""
    folder = tmp_path_factory.mktemp("study")
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
            res = {
                "measures": {
                    "lambda_max": {"value": lam, "stderr": 0.0, "cost": {}},
                    "trace": {"value": float(i), "stderr": 0.1, "cost": {}},
                },
                "metrics": {
                    "gap": 0.01 * lam,
                    "test_acc": 0.5 + 0.02 * lam,
                    "ece": 0.1 - 0.003 * lam,
                    "shift_drop": float((5 * i) % 12),
                },
                "seconds": {"total": 1.0},
            }
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
    return build_report(folder, n_boot=300)


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
    assert _row(report, "trace", "shift_drop")["verdict"] == "no reliable relation"


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
