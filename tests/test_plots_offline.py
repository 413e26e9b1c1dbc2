"""`dvc plots show` draws without network.

DVC's own page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net; `.dvc/config`
points `plots.html_template` at `.dvc/plots/offline.html`, which inlines them (built by
scripts/plots_template.py from the pinned npm packages). Here the real `dvc plots show`
runs in a temporary git + DVC copy of the project on small plot files, and the page it
writes is checked to load nothing from anywhere: no element with a remote source, no
stylesheet import, no spec that fetches its data, no CDN named at all.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

from conftest import PROJECT, commit_project, copy_project, run_command, stage_env

TEMPLATE = PROJECT / ".dvc" / "plots" / "offline.html"


def generator():
    """scripts/plots_template.py, the template's generator, as a module (for its pins)."""
    spec = importlib.util.spec_from_file_location(
        "plots_template", PROJECT / "scripts" / "plots_template.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PINS = generator().PINS

# The URLs the inlined libraries and the specs name, none of which the page loads:
URLS_NEVER_LOADED = (
    "http://www.w3.org/",  # SVG, XLink and XMLNS namespace names
    "https://vega.github.io/schema/",  # each spec's $schema: vega-embed reads the version off it
    "https://vega.github.io/editor/",  # vega-embed's "Open in Vega Editor" menu entry, a click
    "https://github.com/",  # in vega-lite's and fast-json-patch's messages
)

# Attributes through which a browser fetches something by itself.
LOADING_ATTRIBUTES = {"src", "href", "srcset", "data", "action", "formaction", "poster"}
LOADING_ATTRIBUTES |= {"background", "manifest", "ping", "xlink:href", "codebase"}


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of <style> and <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = {"style": [], "script": []}
        self.inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self.text:
            self.inside = tag
            self.text[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self.inside:
            self.inside = None

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text[self.inside][-1] += data


def write_plot_files(root: Path) -> None:
    """Small reports/plots/*.csv with the columns dvc.yaml's plots name."""
    files = {
        "roc.csv": "fpr,tpr\n0.0,0.0\n0.0,0.5\n0.25,0.875\n1.0,1.0\n",
        "det.csv": (
            "far,frr,far_probit,frr_probit\n0.9,0.0,1.28,-3.7\n0.5,0.1,0.0,-1.28\n"
            "0.1,0.5,-1.28,0.0\n"
        ),
        "det_points.csv": "point,far,frr,far_probit,frr_probit\nEER,0.25,0.25,-0.67,-0.67\n",
        "confusion.csv": "actual,predicted\nspoof,spoof\nspoof,bonafide\nbonafide,bonafide\n",
        "score_histogram.csv": "bin_center,bonafide,spoof\n-2.0,0.0,0.75\n0.0,0.25,0.25\n"
        "2.0,0.75,0.0\n",
        "reliability_raw.csv": "predicted,observed,clips\n0.1,0.2,10\n0.9,0.8,10\n",
        "reliability_calibrated.csv": "predicted,observed,clips\n0.15,0.2,10\n0.85,0.8,10\n",
        "xcorpus_det.csv": "corpus,far,frr,far_probit,frr_probit\na,0.5,0.1,0.0,-1.28\n"
        "a,0.1,0.5,-1.28,0.0\nb,0.9,0.0,1.28,-3.7\nb,0.5,0.5,0.0,0.0\n",
    }
    (root / "reports" / "plots").mkdir(parents=True)
    for name, text in files.items():
        (root / "reports" / "plots" / name).write_text(text)


def specs(page: str) -> dict[str, dict]:
    """The vega-lite spec of each plot div dvc_render wrote, by the div's id."""
    found = re.finditer(
        r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = (.*?);\n'
        r"\s*vegaEmbed\('#\1', spec\);",
        page,
        re.S,
    )
    return {match.group(1): json.loads(match.group(2)) for match in found}


def keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_template_inlines_the_three_pinned_libraries() -> None:
    html = TEMPLATE.read_text(encoding="utf-8")
    assert html.count("{plot_divs}") == 1  # where dvc_render puts the plots
    # dvc_render replaces the scripts placeholder with the CDN <script src> tags: left out.
    assert "{" + "scripts" + "}" not in html
    for name, (version, integrity, _) in PINS.items():
        assert generator().banner(name) in html, f"{name} {version}: banner missing"
        assert integrity.startswith("sha512-")
    # each build's own version string, as the minified code holds it
    assert re.search(r'var \w="5\.20\.2";function', html) and PINS["vega"][0] == "5.20.2"
    for name in ("vega-lite", "vega-embed"):
        assert f'="{PINS[name][0]}"' in html, name
    assert len(html.encode()) < 1024 * 1024
    assert (
        html.count("<script>") == html.lower().count("</script") == 3
    )  # nothing inside closes one
    assert (TEMPLATE.parent / "LICENSES.txt").read_text().count("Applies to: ") >= 3


def test_pins_are_the_versions_dvc_render_would_load_from_the_cdn() -> None:
    """After a dvc-render upgrade that moves them: new PINS, then `make plots-template`."""
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert cdn == {name: version for name, (version, _, _) in PINS.items()}


def test_dvc_plots_show_writes_a_page_that_loads_nothing_remote(tmp_path: Path) -> None:
    root = tmp_path / "project"
    copy_project(root)  # dvc.yaml, .dvc/config and the template it names
    shutil.copy(PROJECT / "params.yaml", root / "params.yaml")  # dvc.yaml's ${data.path}
    write_plot_files(root)
    env = stage_env()
    commit_project(root, env)

    output = run_command(["dvc", "plots", "show"], root, env, timeout=120)
    page_path = root / "dvc_plots" / "index.html"
    assert page_path.as_uri() in output
    page = page_path.read_text(encoding="utf-8")

    parsed = Elements()
    parsed.feed(page)
    tags = {tag for tag, _ in parsed.tags}
    # Only what a page of inline scripts and plot divs needs: no link, img, iframe, base ...
    assert tags <= {"html", "head", "meta", "title", "script", "style", "body", "div"}, tags
    for tag, attrs in parsed.tags:
        loading = {a: v for a, v in attrs.items() if a.lower() in LOADING_ATTRIBUTES}
        assert not loading, f"<{tag}> loads {loading}"
        assert "url=" not in (attrs.get("content") or "").lower(), f"<{tag} {attrs}> redirects"
    assert not re.search(r"@import|url\(", "".join(parsed.text["style"]))
    assert len(parsed.text["script"]) == 3 + 6  # the three libraries, one per plot
    assert not re.search(r"cdn|jsdelivr|unpkg", page, re.I)

    # The URLs anywhere in the page, inlined code included, are names, not fetches.
    for url in set(re.findall(r"https?://[^\s\"'`)<>]*", page)):
        if url in ("http://", "https://"):  # vega-embed's test of whether a string is a URL
            continue
        assert url.startswith(URLS_NEVER_LOADED), f"unexpected URL in the page: {url}"

    plots = specs(page)
    assert set(plots) == {
        "ROC",
        "DET",
        "Confusion_at_the_served_threshold",
        "Test_score_histograms",
        "Reliability",
        "Cross-corpus_DET",
    }
    # One DET line per held-out corpus: the project's template colours by the corpus column.
    det = plots["Cross-corpus_DET"]
    assert det["encoding"]["color"]["field"] == "corpus"
    assert {v["corpus"] for v in det["data"]["values"]} == {"a", "b"}
    for name, spec in plots.items():
        assert "url" not in keys(spec), f"{name} fetches data"  # the data is inlined
    roc = plots["ROC"]
    assert roc["title"]["text"] == "ROC"
    points = [(float(v["fpr"]), float(v["tpr"])) for v in roc["data"]["values"]]
    assert points == [(0.0, 0.0), (0.0, 0.5), (0.25, 0.875), (1.0, 1.0)]
    assert roc["encoding"]["x"]["field"] == "fpr" and roc["encoding"]["y"]["field"] == "tpr"


def test_dvc_render_fills_the_template(tmp_path: Path) -> None:
    """dvc_render's own filling: the plot and the refresh tag go in, no CDN tag comes in."""
    from dvc_render import render_html
    from dvc_render.vega import VegaRenderer

    points = [{"fpr": 0.0, "tpr": 0.0, "rev": "workspace"}]
    renderer = VegaRenderer(points, "ROC", template="simple", x="fpr", y="tpr")
    page = Path(render_html([renderer], tmp_path / "index.html", TEMPLATE, 5)).read_text()
    assert "{plot_divs}" not in page and "{refresh_tag}" not in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "vegaEmbed('#ROC', spec);" in page
    assert "<script src" not in page
