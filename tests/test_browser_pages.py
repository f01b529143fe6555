"""The inspect page and the study report in headless Chromium, from file:// URLs: no console error, every <img>
decoded with a non-zero natural size, the expected tables and rows present, and no network request.

A copy of each page gets a small inline script first in <head>: it records console errors, uncaught errors and
every resource the page fetched (Resource Timing, data: URIs aside), and on load writes a JSON verdict into the
DOM, which ``--dump-dom`` returns. Hosts resolve nowhere (``--host-resolver-rules``), so nothing could leave
the machine anyway. A screenshot of each page is kept in pytest's tmp_path (its path printed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import flatminima

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test.sh installs it "
                                                         "with apt-get install -y chromium)")

_PROBE = """<script>(function(){var errs=[];var oe=console.error;console.error=function(){errs.push(
Array.prototype.join.call(arguments,' '));oe.apply(console,arguments);};window.addEventListener('error',function(e){
errs.push('error: '+(e.message||(e.target&&e.target.src)||'resource'));},true);window.addEventListener('load',
function(){setTimeout(function(){var imgs=[];for(var i=0;i<document.images.length;i++){var m=document.images[i];
imgs.push({name:m.getAttribute('alt'),w:m.naturalWidth,h:m.naturalHeight,ok:m.complete});}var net=[];
performance.getEntriesByType('resource').forEach(function(r){if(r.name.indexOf('data:')!==0)net.push(r.name);});
var tables=[];document.querySelectorAll('table').forEach(function(t){tables.push({cls:t.className,
rows:t.querySelectorAll('tbody tr').length});});var p=document.createElement('pre');p.id='browser-verdict';
p.textContent=JSON.stringify({errors:errs,images:imgs,requests:net,tables:tables,
headings:Array.prototype.map.call(document.querySelectorAll('h2,h3'),function(h){return h.textContent;})});
document.body.appendChild(p);},100);});})();</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=2000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def verdict(page: Path, tmp: Path) -> dict:
    """Open a probed copy of ``page`` (beside it, so relative files resolve) and return the script's verdict."""
    text = page.read_text(encoding="utf-8")
    probed = page.with_name(page.stem + ".probed.html")
    probed.write_text(re.sub(r"<head>", "<head>" + _PROBE, text, count=1) if "<head>" in text
                      else _PROBE + text, encoding="utf-8")
    dom = _chromium(tmp, "--dump-dom", probed.as_uri()).stdout
    found = re.search(r'<pre id="browser-verdict">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run in {probed}"
    import html

    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, tmp: Path, name: str) -> Path:
    shot = tmp / f"{name}.png"
    _chromium(tmp, f"--screenshot={shot}", "--window-size=1200,4000", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {page}"
    print(f"screenshot of {name}: {shot}")
    return shot


def _check_common(v: dict) -> None:
    assert v["errors"] == [], v["errors"]
    assert v["requests"] == [], f"the page fetched {v['requests']}"
    assert v["images"], "no images"
    for img in v["images"]:
        assert img["ok"] and img["w"] > 0 and img["h"] > 0, f"image {img['name']} did not load ({img})"


def test_inspect_page_in_headless_chromium(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    net, other = (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)) for _ in range(2))
    ins = flatminima.inspect(net, (x, y), others=[other], lr=0.1, optimizer="momentum", budget="fast",
                             out=tmp_path / "inspect", progress=False)
    v = verdict(ins.html, tmp_path)
    _check_common(v)
    assert len(v["images"]) >= 6
    tables = {t["cls"]: t["rows"] for t in v["tables"]}
    assert tables["eig"] == len(ins.top.values) + 1  # top-k and λmin
    assert tables["sharpness"] == len(ins.sharpness) and tables["layers"] == len(ins.per_layer.layers) + 1
    assert tables["side"] == 2 and tables["stability"] >= 5
    for h in ("Budget", "Warnings", "Curvature", "Sharpness measures", "Compared solutions", "Side by side"):
        assert any(h in x for x in v["headings"]), h
    screenshot(ins.html, tmp_path, "inspect_page")


def test_study_report_in_headless_chromium(tmp_path):
    from flatminima.report import build_report
    from test_report_html import _make_store

    rep = build_report(_make_store(tmp_path / "study"), samples=500)
    v = verdict(rep.html, tmp_path)
    _check_common(v)
    assert len(v["images"]) == 9
    assert max(t["rows"] for t in v["tables"]) >= 8  # the correlation table: 2 measures × 4 targets
    assert any("Run quality" in h for h in v["headings"])
    screenshot(rep.html, tmp_path, "study_report")
