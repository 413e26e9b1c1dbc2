"""`deepfake-audio review`: a local page to check one recording at a time.

Choose or drop a file; the page shows the verdict, the calibrated fake probability, the
timeline (serving/timeline.py: every window's probability and the fake ranges, drawn as
inline SVG over the waveform), the saliency of the most suspicious window over its
features (serving/saliency.py), and plays the recording from any point: a click on the
timeline sets the player's `currentTime`. Plain HTML and JavaScript, no framework.

The same rules as a served model (serving/limits.py, `Limits.from_environment`): uploads
only (no path is ever read on the client's behalf), at most DEEPFAKE_AUDIO_MAX_BYTES per
upload - refused from Content-Length, and counted while reading for a body without one -
and at most DEEPFAKE_AUDIO_MAX_SECONDS of audio. The upload is read into memory and scored
from there: it is never written to disk, and the browser plays its own copy of the file.
A bad file gets its one-line reason on the page (HTTP 400/413 with `{"error": ...}`).
It binds 127.0.0.1 unless `--host` says otherwise: the page has no authentication.

FastAPI and uvicorn come with MLflow. The body is the raw file (the page sends it with
`fetch`), so no multipart parser is needed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from typing import Any

import numpy as np
from fastapi import FastAPI, Request  # module level: FastAPI resolves the endpoints' hints here
from fastapi.responses import HTMLResponse, JSONResponse

from deepfake_audio.serving.limits import MAX_BYTES_ENV, MAX_SECONDS_ENV, Limits

DEFAULT_PORT = 8765
# Stretches sent to the page for the SVG: an hour at an eighth of a 2 s window is ~30,000
# stretches; more than a screen's width of bars only costs bytes.
MAX_BARS = 1500


def _safe_name(name: str | None) -> str:
    """The client's file name, for messages only: its last part, printable, short."""
    name = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^\w.\- ]", "_", name)[:80]
    return name or "upload"


def _bars(found: Any) -> list[list[float]]:
    """[start, end, probability, fake] per stretch, merged down to at most MAX_BARS."""
    edges, probs, fake = found.edges, found.stretch_probabilities, found.stretch_fake
    n = probs.size
    if n <= MAX_BARS:
        groups = [np.array([i]) for i in range(n)]
    else:
        groups = np.array_split(np.arange(n), MAX_BARS)
    return [
        [
            round(float(edges[g[0]]), 3),
            round(float(edges[g[-1] + 1]), 3),
            round(float(probs[g].max()), 4),
            int(bool(fake[g].any())),
        ]
        for g in groups
    ]


def _saliency_png(detector: Any, found: Any, source: bytes) -> str | None:
    """The most suspicious window's saliency picture as a base64 PNG (None if unavailable)."""
    from deepfake_audio.dsp import stream
    from deepfake_audio.dsp.features import clip_features
    from deepfake_audio.serving import saliency, timeline

    fp = detector.features
    index = int(np.argmin(found.scores))
    start = int(round(found.starts[index] * fp.sample_rate))
    level = stream.measure(source, fp.sample_rate)
    hop = max(1, int(round(found.hop * fp.sample_rate)))
    for at, window in timeline.levelled_windows(source, fp, level, hop):  # as scored
        if at == start:
            x = clip_features(window, fp).reshape(fp.input_shape).astype(np.float32)
            break
    else:
        return None
    try:
        grad = saliency.gradients(detector.model, x[None])[0]
    except ValueError:
        return None
    title = (
        f"most suspicious window: {found.starts[index]:.2f}-"
        f"{found.starts[index] + found.window:.2f} s, P(fake) {found.probabilities[index]:.3f}"
    )
    fig = saliency.figure(x, saliency.attribution(x, grad), fp.kind, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def analyse(detector: Any, data: bytes, name: str, limits: Limits) -> dict[str, Any]:
    """The page's answer for one upload; raises UserError/ValueError with the reason."""
    from deepfake_audio.serving import timeline

    found = timeline.compute(
        detector, data, name, max_seconds=limits.max_seconds, cap_note=MAX_SECONDS_ENV
    )
    return {
        "name": name,
        "label": found.label,
        "fake_probability": round(found.fake_probability, 6),
        "score": round(found.score, 6),
        "threshold_probability": round(found.threshold_probability, 6),
        "target_prior": detector.rule.target_prior,
        "duration_s": round(found.duration, 3),
        "window_s": found.window,
        "hop_s": found.hop,
        "ranges": [[round(a, 3), round(b, 3)] for a, b in found.ranges],
        "summary": found.summary(),
        "bars": _bars(found),
        "envelope": np.round(
            found.envelope[:, :: max(1, found.envelope.shape[1] // 600)], 4
        ).tolist(),
        "saliency_png": _saliency_png(detector, found, data),
    }


def build_app(detector: Any, limits: Limits, model_uri: str = "") -> FastAPI:
    """The FastAPI app: GET / (the page), POST /api/score (raw file body), GET /health."""
    from deepfake_audio.core.errors import UserError

    app = FastAPI(title="deepfake-audio review", docs_url=None, redoc_url=None)
    page = PAGE.replace("__MODEL__", json.dumps(model_uri)[1:-1].replace("<", "&lt;"))
    cap = limits.max_bytes

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(message.split())}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/score")
    async def score(request: Request) -> Any:
        from urllib.parse import unquote

        name = _safe_name(unquote(request.headers.get("x-filename") or ""))
        declared = request.headers.get("content-length")
        over = f"{name}: the upload is larger than the {cap:,}-byte cap ({MAX_BYTES_ENV})"
        if cap is not None and declared and declared.isdigit() and int(declared) > cap:
            return refuse(413, over)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if cap is not None and len(body) > cap:
                return refuse(413, over)
        if not body:
            return refuse(400, f"{name}: empty file (0 bytes)")
        from starlette.concurrency import run_in_threadpool

        try:
            result = await run_in_threadpool(analyse, detector, bytes(body), name, limits)
        except (UserError, ValueError) as exc:
            return refuse(400, str(exc))
        return result

    return app


def serve(params: Any, model_uri: str | None, host: str, port: int) -> int:
    """Load the model, then serve the page until Ctrl-C."""
    import uvicorn

    from deepfake_audio.core.errors import UserError
    from deepfake_audio.serving import predict

    try:
        limits = Limits.from_environment()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    limits = Limits(max_seconds=limits.max_seconds, max_bytes=limits.max_bytes)  # no paths
    _, kind, uri, detector = predict.load_detector(params, model_uri)
    if detector is None or not kind.audio:
        raise UserError(f"--model {uri}: the review page needs a deepfake-audio audio model")
    detector.limits = limits
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"deepfake-audio: warning: the review page binds {host}: anyone who can reach it "
            "can upload files (it has no authentication)",
            file=sys.stderr,
        )
    print(f"review page: http://{host}:{port}/  (model {uri}; Ctrl-C stops it)", flush=True)
    uvicorn.run(build_app(detector, limits, uri), host=host, port=port, log_level="warning")
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>deepfake-audio review</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px;font-weight:600}
header small{font-weight:400;color:#aab3c5;margin-left:12px}
main{max-width:1000px;margin:18px auto;padding:0 16px}
#drop{border:2px dashed #8a94a8;border-radius:8px;padding:22px;text-align:center;background:#fff}
#drop.over{border-color:#2f6fd6;background:#eef4ff}
#status{margin:12px 0;min-height:1.4em}
#error{color:#b3261e;font-weight:600}
#verdict{font-size:22px;font-weight:700;margin:6px 0}
.fake{color:#b3261e}.real{color:#1e7b34}
.card{background:#fff;border-radius:8px;padding:14px 16px;margin:12px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
#timeline{width:100%;height:170px;cursor:pointer;display:block}
#ranges li{cursor:pointer;color:#2f6fd6}
audio{width:100%;margin-top:8px}
#saliency{max-width:100%}
.muted{color:#667085;font-size:13px}
</style></head><body>
<header>deepfake-audio review<small>model __MODEL__</small></header>
<main>
<div id="drop">Drop an audio file here, or <input type="file" id="file" accept="audio/*"></div>
<div id="status"><span id="error"></span><span id="busy"></span></div>
<section id="result" hidden>
<div class="card"><div id="name" class="muted"></div><div id="verdict"></div>
<div id="prob"></div><ul id="ranges"></ul>
<p class="muted" id="prior"></p></div>
<div class="card"><div class="muted">Timeline: P(fake) per stretch over the waveform,
fake ranges shaded; click to play from there.</div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg"></svg>
<audio id="player" controls></audio></div>
<div class="card"><div class="muted">Saliency of the most suspicious window: red pushed the
score towards fake, blue towards genuine.</div><img id="saliency" alt="saliency"></div>
</section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
let duration = 0;
function el(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function draw(r) {
  const svg = $("timeline");
  svg.replaceChildren();
  const W = svg.clientWidth || 900, H = 170, top = 70, bottom = H - 18;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const x = (t) => (t / r.duration_s) * W;
  for (const [a, b] of r.ranges)
    svg.appendChild(el("rect", {x: x(a), y: 0, width: Math.max(1, x(b) - x(a)), height: bottom,
      fill: "#d62728", "fill-opacity": 0.16, class: "range"}));
  const [lo, hi] = r.envelope, n = lo.length, mid = 34;
  const peak = Math.max(1e-6, ...hi, ...lo.map((v) => -v)), k = 30 / peak;
  let d = "";
  for (let i = 0; i < n; i++) {
    const px = ((i + 0.5) / n * W).toFixed(1);
    d += `M${px},${(mid - hi[i] * k).toFixed(1)}L${px},${(mid - lo[i] * k).toFixed(1)}`;
  }
  svg.appendChild(el("path", {d: d, stroke: "#4a6fa5", "stroke-width": 1}));
  for (const [a, b, p, f] of r.bars)
    svg.appendChild(el("rect", {x: x(a), y: bottom - p * (bottom - top),
      width: Math.max(0.5, x(b) - x(a)), height: p * (bottom - top),
      fill: f ? "#d62728" : "#56607a", class: "bar"}));
  const ty = bottom - r.threshold_probability * (bottom - top);
  svg.appendChild(el("line", {x1: 0, x2: W, y1: ty, y2: ty, stroke: "#d62728",
    "stroke-dasharray": "4 3"}));
  const step = r.duration_s > 600 ? 60 : r.duration_s > 120 ? 30 : r.duration_s > 30 ? 5 : 1;
  for (let t = 0; t <= r.duration_s; t += step) {
    const label = el("text", {x: x(t) + 2, y: H - 4, "font-size": 10, fill: "#667085"});
    label.textContent = t + " s";
    svg.appendChild(label);
  }
  svg.appendChild(el("line", {id: "cursor", x1: 0, x2: 0, y1: 0, y2: bottom,
    stroke: "#1d2330"}));
}
function seek(t) {
  const p = $("player");
  p.currentTime = Math.max(0, Math.min(duration, t));
  p.play().catch(() => {});
}
$("timeline").addEventListener("click", (ev) => {
  const box = $("timeline").getBoundingClientRect();
  seek((ev.clientX - box.left) / box.width * duration);
});
$("player").addEventListener("timeupdate", () => {
  const c = $("cursor");
  if (!c || !duration) return;
  const W = $("timeline").viewBox.baseVal.width;
  const px = $("player").currentTime / duration * W;
  c.setAttribute("x1", px); c.setAttribute("x2", px);
});
async function score(file) {
  $("error").textContent = "";
  $("busy").textContent = "scoring " + file.name + "...";
  $("result").hidden = true;
  document.body.dataset.state = "busy";
  let body;
  try {
    const reply = await fetch("api/score", {method: "POST", body: file,
      headers: {"X-Filename": encodeURIComponent(file.name).slice(0, 200)}});
    body = await reply.json();
    if (!reply.ok) throw new Error(body.error || ("HTTP " + reply.status));
  } catch (e) {
    $("busy").textContent = "";
    $("error").textContent = e.message;
    document.body.dataset.state = "error";
    return;
  }
  $("busy").textContent = "";
  duration = body.duration_s;
  $("name").textContent = file.name + " - " + body.duration_s.toFixed(1) + " s";
  // The file's verdict, and whether any passage is fake: a short insert in a long genuine
  // recording leaves the file's mean score genuine, and an analyst needs to see both.
  const fake = body.label === "fake", passages = body.ranges.length > 0;
  $("verdict").textContent = fake ? "Likely fake" : passages
    ? "Fake passages found (the file as a whole scores genuine)" : "No fake detected";
  $("verdict").className = fake || passages ? "fake" : "real";
  $("prob").textContent = "P(fake) " + body.fake_probability.toFixed(3) +
    " for the whole file; " + (body.summary.length ? body.summary.length +
    " fake range(s):" : "no fake range.");
  $("prior").textContent = (body.target_prior === null
    ? "Uncalibrated model: P(fake) is the logistic of its raw score."
    : "P(fake) calibrated on the model's validation clips, at a spoof prior of " +
      body.target_prior + ".") + " A demo model is trained on a synthetic corpus.";
  const list = $("ranges");
  list.replaceChildren();
  for (const [a, b] of body.ranges) {
    const li = document.createElement("li");
    li.textContent = `fake from ${a.toFixed(1)} s to ${b.toFixed(1)} s`;
    li.onclick = () => seek(a);
    list.appendChild(li);
  }
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(file);
  $("saliency").hidden = !body.saliency_png;
  if (body.saliency_png) $("saliency").src = "data:image/png;base64," + body.saliency_png;
  $("result").hidden = false;
  draw(body);
  document.body.dataset.state = "scored";
}
$("file").addEventListener("change", (ev) => {
  if (ev.target.files[0]) score(ev.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault(); drop.classList.remove("over");
  if (ev.dataTransfer.files[0]) score(ev.dataTransfer.files[0]);
});
</script></body></html>
"""
