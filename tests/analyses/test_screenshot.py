"""The circuit page in headless Chromium, offline: a synthetic circuit of 310 nodes with 15 core
nodes, measured by a probe script in the real layout (label boxes, text fitting its box, page
width) and photographed (the core graph region is not blank). The screenshot is kept under
``$SPARSE_LENS_ARTIFACTS`` (default ``test-artifacts/``) for a person to look at."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from analyses.circuit_view import render_circuit_page
from sparse_lens.circuits.graph_view.core import core_drawing
from tests.analyses.test_views import _circuit_data
from tests.circuits.test_graph_view import synthetic_graph

OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"]  # fmt: skip
WIDTH, HEIGHT = 1300, 1600

# opens every <details> when asked (?open), then records, per graph view, the box of the svg
# and of every label with its rect, and the page's scroll width
PROBE = """<script>
window.addEventListener('load', function () {
  if (location.search.indexOf('open') >= 0) {
    document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  }
  var box = function (e) { var b = e.getBoundingClientRect();
    return [b.left + scrollX, b.top + scrollY, b.width, b.height]; };
  var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth, views: {}};
  document.querySelectorAll('svg.circuit-graph').forEach(function (svg) {
    out.views[svg.dataset.view] = {svg: box(svg), labels: Array.prototype.map.call(
      svg.querySelectorAll('g.node, g.group'), function (g) {
        return {text: g.querySelector('text').textContent, text_box: box(g.querySelector('text')),
                rect: box(g.querySelector('rect'))}; })};
  });
  var pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("SPARSE_LENS_REQUIRE_BROWSER"):
        pytest.fail("SPARSE_LENS_REQUIRE_BROWSER is set but chromium is not installed")
    return found


def _overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _probe(chromium: str, page: Path, profile: Path, query: str) -> dict:
    dom = subprocess.run(
        [chromium, *OFFLINE, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
         f"--window-size={WIDTH},{HEIGHT}", "--dump-dom", page.as_uri() + query],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
    assert found, "the probe script did not run"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&quot;", '"'))


def test_screenshot_of_a_300_node_circuit_page(tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (scripts/install_browser.sh)")
    graph = synthetic_graph()
    n_core_boxes = len(core_drawing(graph).items)  # 15 core nodes and the collapsed groups
    assert len(graph.core()) == 15 and n_core_boxes > 20
    data = dataclasses.replace(_circuit_data(failed=()), graph=graph)
    page = tmp_path / "circuit.html"
    page.write_text(render_circuit_page(data).replace("</body>", PROBE + "</body>"))
    for query in ("", "?open"):  # as loaded (core view), then with the full graph open
        probe = _probe(chromium, page, tmp_path / "profile", query)
        assert probe["scrollWidth"] <= probe["innerWidth"], probe["scrollWidth"]  # no overflow
        views = probe["views"]
        assert set(views) == {"core", "full"}
        shown = ["core", "full"] if query else ["core"]
        for name in shown:
            labels = views[name]["labels"]
            assert len(labels) == (n_core_boxes if name == "core" else 310)
            for lab in labels:  # the text as rendered fits its box
                (tx, ty, tw, th), (rx, ry, rw, rh) = lab["text_box"], lab["rect"]
                assert (
                    tw > 0 and rx <= tx and tx + tw <= rx + rw and ry <= ty + th / 2 <= ry + rh
                ), lab
            rects = [lab["rect"] for lab in labels]
            bad = [(labels[i]["text"], labels[j]["text"]) for i in range(len(rects))
                   for j in range(i + 1, len(rects)) if _overlaps(rects[i], rects[j])]  # fmt: skip
            assert bad == [], bad[:5]
    core = _probe(chromium, page, tmp_path / "profile", "")["views"]["core"]
    assert any(" · " in lab["text"] for lab in core["labels"])  # core nodes carry their role
    assert any(re.fullmatch(r"\d+ more nodes?", lab["text"]) for lab in core["labels"])
    artefacts = Path(os.environ.get("SPARSE_LENS_ARTIFACTS", "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "circuit_page_300_nodes.png"
    subprocess.run(
        [chromium, *OFFLINE, f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    image = Image.open(shot).convert("L")
    x, y, w, h = (round(v) for v in core["svg"])
    assert y + h <= HEIGHT, "the core graph is below the first screen"
    region = image.crop((x, y, min(x + w, WIDTH), y + h))
    dark = sum(1 for v in region.getdata() if v < 160)
    assert dark > 0.01 * region.width * region.height, "the core graph region is blank"
