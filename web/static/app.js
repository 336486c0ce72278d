// The result pages: history (#/) and one detection (#/d/<task_id>). Plain script, no build step.
// Everything shown comes from the detection_history columns as stored (detector_scores, model_metadata),
// the same values the customer's dashboard reads; text is inserted as text, never as HTML.
"use strict";

(() => {
  const KEY_STORE = "deepfake-detector.api-key";
  const POLL_MS = 1000;
  // Labels, orientation, colours and words come from /labels.json (pipeline/labels.json: the one source shared
  // with the CLI, the HTML report, WhatsApp and the React component). Stored values keep the database's
  // orientation; every bar shows "higher = more authentic" (bar.from: "one_minus" or "same").
  let SPEC = null;
  let BARS = [];
  let SLOT_BARS = {};
  const shown = (bar, stored) => (typeof stored === "number" ? (bar.from === "one_minus" ? 1 - stored : stored) : null);
  const BUSY = new Set(["pending", "processing"]);

  let timer = null;
  let nav = 0; // bumped on every navigation: answers for a page left meanwhile are dropped
  let lastItems = [];
  const app = document.getElementById("app");

  // -- helpers ------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style") Object.assign(el.style, v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const pct = (x, digits = 0) => (typeof x === "number" ? `${(100 * x).toFixed(digits)} %` : "—");
  const clamp01 = (x) => Math.min(1, Math.max(0, x));
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const apiKey = () => localStorage.getItem(KEY_STORE) || "";

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${apiKey()}` };
    const resp = await fetch(path, { ...options, headers });
    let body = null;
    try { body = await resp.json(); } catch { body = null; }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message : `HTTP ${resp.status}`;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  // an authorised binary GET (figures): a Blob, or an Error with the API's message
  api.blob = async (path) => {
    const resp = await fetch(path, { headers: { Authorization: `Bearer ${apiKey()}` } });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return resp.blob();
  };

  function stop() { clearTimeout(timer); timer = null; }
  function later(fn) { stop(); timer = setTimeout(fn, POLL_MS); }

  function stateOf(row) {
    if (row.status === "completed") return row.detection_result || (row.verdict || "completed").toLowerCase();
    return row.status;
  }
  function badgeText(row) {
    if (row.status === "processing") {
      const stage = row.stage ? ` · ${row.stage}` : "";
      return `processing${stage}`;
    }
    return stateOf(row).replace("_", " ");
  }
  function detailHref(row) {
    return row.task_id ? `#/d/${encodeURIComponent(row.task_id)}` : `#/d/id:${encodeURIComponent(row.id)}`;
  }
  function notice(text, isError) { return h("div", { class: isError ? "notice error" : "notice", role: "status" }, text); }

  // -- history --------------------------------------------------------------------------------------
  function showHistory() {
    const message = h("div", { id: "upload-message" });
    const file = h("input", { id: "file", type: "file", accept: "video/*,audio/*,image/*", required: true });
    const button = h("button", { id: "upload-button", type: "submit", class: "primary" }, "Analyse");
    const form = h("form", { id: "upload-form", class: "upload", onsubmit: (ev) => upload(ev, file, button, message) },
      file, button);
    const list = h("div", { id: "history" }, h("p", { class: "muted loading" }, "Loading…"));
    app.replaceChildren(
      h("section", { class: "card" }, h("h2", {}, "Check a video, voice message or photo"), form, message),
      h("section", { class: "card" }, h("h2", {}, "History"), list),
    );
    refreshHistory();
  }

  async function upload(ev, file, button, message) {
    ev.preventDefault();
    if (!file.files.length) return;
    const data = new FormData();
    data.append("file", file.files[0]);
    button.disabled = true;
    message.replaceChildren(notice(`Uploading ${file.files[0].name}…`));
    try {
      const res = await api("/detect", { method: "POST", body: data });
      const how = res.cached ? "analysed before: result ready" : "queued";
      message.replaceChildren(notice(`${file.files[0].name}: ${how}.`));
      file.value = "";
      refreshHistory();
    } catch (err) {
      message.replaceChildren(notice(`Upload refused: ${err.message}`, true));
    } finally {
      button.disabled = false;
    }
  }

  async function refreshHistory() {
    const mine = nav;
    const list = document.getElementById("history");
    if (!list) return;
    if (!apiKey()) {
      list.replaceChildren(notice("Enter your API key above to see your detections."));
      return;
    }
    let data;
    try {
      data = await api("/history?limit=50");
    } catch (err) {
      if (mine !== nav) return;
      list.replaceChildren(notice(`Cannot load the history: ${err.message}`, true));
      if (err.status !== 401) later(refreshHistory);
      return;
    }
    if (mine !== nav) return;
    lastItems = data.items;
    if (!data.items.length) {
      list.replaceChildren(h("p", { class: "muted" }, "No detections yet: upload a file above."));
    } else {
      list.replaceChildren(h("ul", { class: "history" }, data.items.map(historyItem)));
    }
    if (data.items.some((r) => BUSY.has(r.status))) later(refreshHistory);
  }

  function historyItem(row) {
    const conf = typeof row.confidence_score === "number" ? `confidence ${row.confidence_score.toFixed(0)} %` : "";
    const name = row.source_name || row.source?.label || row.file_type || "detection";
    const meta = [row.file_type, row.source && row.source.channel === "whatsapp" ? row.source.label : null,
      when(row.created_at)].filter(Boolean).join(" · ");
    return h("li", { "data-task-id": row.task_id || "", "data-status": row.status },
      h("a", { class: "row-link", href: detailHref(row) },
        h("div", {}, h("div", { class: "row-name" }, name), h("div", { class: "row-meta" }, meta)),
        h("span", { class: `badge ${stateOf(row)}`, "data-role": "status" }, badgeText(row)),
        h("span", { class: "row-conf" }, conf)));
  }

  // -- detail ---------------------------------------------------------------------------------------
  async function showDetail(key) {
    const mine = nav;
    let row;
    try {
      if (key.startsWith("id:")) {
        const id = key.slice(3);
        row = lastItems.find((r) => r.id === id);
        if (!row) {
          const data = await api("/history?limit=200");
          row = data.items.find((r) => r.id === id);
        }
        if (!row) throw new Error("this detection is not in your history");
      } else {
        row = await api(`/history/${encodeURIComponent(key)}`);
      }
    } catch (err) {
      if (mine === nav) app.replaceChildren(backLink(), notice(`Cannot load this detection: ${err.message}`, true));
      return;
    }
    if (mine !== nav) return;
    app.replaceChildren(...renderDetail(row).filter(Boolean));
    if (BUSY.has(row.status)) later(() => showDetail(key));
  }

  function backLink() { return h("p", {}, h("a", { href: "#/", class: "back" }, "← History")); }

  function verdictBanner(row, ds) {
    const state = stateOf(row);
    let title;
    let words;
    const lines = [];
    if (BUSY.has(row.status)) {
      title = row.status === "pending" ? "QUEUED" : "ANALYSING";
      words = row.status === "pending" ? "waiting for a free worker" : `stage: ${row.stage || "starting"}`;
    } else if (row.status === "failed") {
      title = "FAILED";
      words = row.reason || SPEC.verdicts.FAILED.words;
    } else {
      const verdict = (ds.verdict || row.detection_result || "").toUpperCase();
      title = verdict.replace("_", " ");
      words = (SPEC.verdicts[ds.declared_ai ? "DECLARED_AI" : verdict] || {}).words || "";
      if (row.reason) words += `: ${row.reason}`;
    }
    if (typeof ds.final_weighted_score === "number") {
      const overall = BARS.find((b) => b.key === "final_weighted_score");
      const th = (ds.fusion || {}).thresholds || {};
      const bands = typeof th.authentic_below === "number" ? ` (${SPEC.overall_bands
        .replace("{authentic}", Math.round(100 * (1 - th.authentic_below)))
        .replace("{fake}", Math.round(100 * (1 - th.fake_above)))})` : "";
      lines.push(`${overall.label} ${pct(shown(overall, ds.final_weighted_score))}${bands} · confidence ${typeof row.confidence_score === "number"
        ? row.confidence_score.toFixed(0) + " %" : "—"}`);
    } else if (typeof row.confidence_score === "number") {
      lines.push(`confidence ${row.confidence_score.toFixed(0)} %`);
    }
    const progress = row.status === "processing" && typeof row.progress === "number"
      ? h("div", { class: "progress" }, h("div", { style: { width: `${100 * clamp01(row.progress)}%` } })) : null;
    // a verdict from a degraded installation never looks like a full one
    const partial = ds.partial ? h("p", { class: "partial", id: "partial" },
      h("b", {}, "PARTIAL RESULT: "), "detectors this file needed are not available on this server: ",
      (ds.missing_detectors || []).join("; ")) : null;
    // the findings that drove the verdict come first, in the report's own words
    const found = (ds.findings || []).filter((f) => f !== row.reason);
    const findings = found.length && !BUSY.has(row.status)
      ? h("ul", { class: "findings", id: "findings" }, found.map((f) => h("li", {}, f))) : null;
    const bench = ds.benchmark && ds.benchmark.sentence && !BUSY.has(row.status)
      ? h("p", { class: "benchmark", id: "benchmark" }, ds.benchmark.sentence) : null;
    return h("section", { class: `verdict ${state}`, id: "verdict", "data-status": row.status },
      h("h1", {}, title), partial, h("p", {}, words), findings, bench, lines.map((l) => h("p", {}, l)), progress);
  }

  function scoreBar(bar, ds) {
    const value = shown(bar, ds[bar.key]);
    const det = bar.slot ? (ds.detectors || {})[bar.slot] : null;
    const head = h("div", { class: "score-head" },
      h("span", { class: "score-label" }, h("span", { class: "dot", style: { background: bar.colour } }), bar.label),
      h("span", { class: "score-value" }, typeof value === "number" ? pct(value) : ""));
    const th = (ds.fusion || {}).thresholds || {};
    const bands = bar.key === "final_weighted_score" && typeof th.authentic_below === "number"
      ? SPEC.overall_bands.replace("{authentic}", Math.round(100 * (1 - th.authentic_below)))
        .replace("{fake}", Math.round(100 * (1 - th.fake_above))) : null;
    const hint = h("div", { class: "score-hint" }, bands ? `${bar.hint}; ${bands}` : bar.hint);
    if (typeof value === "number") {
      const width = `${(100 * clamp01(value)).toFixed(2)}%`;
      return h("div", { class: "score", "data-key": bar.key, "data-value": value }, head, hint,
        h("div", { class: "bar", role: "meter", "aria-label": bar.label, "aria-valuemin": 0, "aria-valuemax": 100,
          "aria-valuenow": (100 * value).toFixed(1) },
          h("div", { class: "bar-fill", style: { width, background: bar.colour } })));
    }
    let status = det ? SPEC.status_words[det.status] || det.status : "not run";
    let reason = det && det.reason ? det.reason : null;
    if (!reason) {
      if (bar.key === "face_quality") { status = "no face"; reason = "no face was found to judge"; }
      else if (bar.key === "final_weighted_score") reason = "no detector produced a score";
      else reason = "this detector produced no score for this file";
    }
    return h("div", { class: "score na", "data-key": bar.key, "data-value": "" }, head, hint,
      h("div", { class: "score-na" }, h("span", { class: "status" }, status), reason));
  }

  function timelineChart(slot, det, duration, weak) {
    // calibrated per-second scores (the scale of the detector's bar) where stored, raw otherwise
    const pts = (det.timeline_calibrated || det.timeline || []).filter((p) => Array.isArray(p) && typeof p[2] === "number");
    const W = 640, H = 104, padL = 30, padR = 10, padT = 8, padB = 16;
    const dur = Math.max(duration || 0, ...pts.map((p) => p[1]), 1);
    const w = W - padL - padR, hgt = H - padB - padT;
    const nodes = [];
    for (const g of [0, 0.5, 1]) {
      const y = padT + hgt * (1 - g);
      nodes.push(svg("line", { x1: padL, x2: W - padR, y1: y, y2: y, stroke: "#e5e7eb" }));
      nodes.push(svg("text", { x: padL - 4, y: y + 3, "font-size": 9, "text-anchor": "end", fill: "#6b7280" }, g.toFixed(1)));
    }
    for (const [s, e, v] of pts) {
      const x = padL + (w * s) / dur;
      const bw = Math.max(1, (w * (e - s)) / dur - 1);
      const bh = hgt * clamp01(v);
      nodes.push(svg("rect", { x: x.toFixed(1), y: (padT + hgt - bh).toFixed(1), width: bw.toFixed(1), height: bh.toFixed(1),
        fill: weak ? "#9ca3af" : SLOT_BARS[slot].colour, opacity: (0.35 + 0.65 * clamp01(v)).toFixed(2) },
        svg("title", {}, `${s.toFixed(0)}–${e.toFixed(0)} s: ${pct(v)} suspicious`)));
    }
    const step = Math.max(1, Math.ceil(dur / 10));
    for (let t = 0; t <= dur; t += step) {
      nodes.push(svg("text", { x: (padL + (w * t) / dur).toFixed(1), y: H - 3, "font-size": 10, "text-anchor": "middle",
        fill: "#6b7280" }, `${t}s`));
    }
    return h("div", { class: "timeline", "data-slot": slot, "data-weak": weak ? "true" : null },
      h("h3", {}, `${SLOT_BARS[slot].label}: ${SLOT_BARS[slot].suspicion} per second`,
        weak ? h("span", { class: "muted weak" }, ` (${SPEC.weak_evidence})`) : null),
      svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${SLOT_BARS[slot].label}: suspicion per second` },
        nodes));
  }

  // a detector whose fused evidence (reliability × calibrated score) is below what counts: its chart is greyed
  function weakEvidence(ds, slot) {
    const ev = ((ds.fusion || {}).evidence || {})[slot];
    return typeof ev === "number" && ev < SPEC.finding_min_evidence;
  }

  function facesCard(tracks) {
    const figs = tracks.map((t) => h("figure", { class: "face", "data-track": t.track_id },
      t.thumbnail_jpeg_b64 ? h("img", { alt: `face ${t.track_id}`, src: `data:image/jpeg;base64,${t.thumbnail_jpeg_b64}` })
        : h("div", { class: "muted" }, "no thumbnail"),
      h("figcaption", {},
        `face ${t.track_id}${t.is_main ? " (main)" : ""}${t.is_speaker === true ? ", speaking" : ""}`, h("br"),
        `${Number(t.start_s).toFixed(1)}–${Number(t.end_s).toFixed(1)} s, ${t.frames} frames`, h("br"),
        `raw face-check suspicion (uncalibrated) ${typeof t.visual_score === "number" ? t.visual_score.toFixed(2) : "—"}`, h("br"),
        `quality ${typeof t.quality === "number" ? t.quality.toFixed(2) : "—"}`)));
    return h("section", { class: "card", id: "faces" }, h("h2", {}, "Faces"),
      figs.length ? h("div", { class: "faces" }, figs) : h("p", { class: "muted" }, "No face was found."));
  }

  // -- evidence pictures (file storage: fetched with the API key, shown from blob URLs) ------------------
  function figureCard(row, ds) {
    const figs = (ds.figures || []).filter((f) => f.name !== "summary"); // the summary repeats this page (WhatsApp)
    if (!figs.length || !row.task_id) return null;
    const key = row.task_id;
    const items = figs.map((f) => {
      const img = h("img", { alt: f.title, "data-figure": f.name, class: "figure-img" });
      api.blob(`/history/${encodeURIComponent(key)}/figures/${encodeURIComponent(f.name)}.png`)
        .then((blob) => { img.src = URL.createObjectURL(blob); })
        .catch((err) => img.replaceWith(h("p", { class: "muted" }, `${f.title}: not available (${err.message})`)));
      return h("figure", { class: "evidence", "data-figure": f.name }, img,
        h("figcaption", {}, h("b", {}, f.title), `: ${f.caption}`));
    });
    return h("section", { class: "card", id: "evidence" }, h("h2", {}, "Evidence"), items);
  }

  function credentialsCard(ds) {
    const cc = ds.content_credentials;
    if (!cc || cc.state === "unsupported") return null;
    const words = { trusted: "valid, signer trusted", valid: "valid (signer not on a trust list)",
      invalid: "does NOT validate", absent: "none in this file", error: "could not be read" };
    const body = cc.state === "absent"
      ? [h("p", { class: "muted" }, "No Content Credentials (C2PA) in this file. Most phone and messenger files carry "
        + "none: this is not evidence either way.")]
      : [cc.sentence ? h("p", {}, cc.sentence) : null,
        h("table", { class: "meta" }, h("tbody", {},
          metaRow("State", words[cc.state] || cc.state), metaRow("Signed by", cc.signer),
          metaRow("Made with", cc.claim_generator), metaRow("Declares", cc.ai_declared || "no AI generation"),
          metaRow("Source type", cc.digital_source_type), metaRow("Actions", (cc.actions || []).join(", ")),
          metaRow("Problems", cc.reason)))];
    return h("section", { class: "card", id: "credentials", "data-state": cc.state },
      h("h2", {}, "Content Credentials"), body);
  }

  function metaRow(label, value) {
    if (value === null || value === undefined || value === "") return null;
    return h("tr", {}, h("th", {}, label), h("td", {}, value));
  }

  function metadataCard(row, ds, md) {
    const media = md.media || {};
    const fusion = ds.fusion || {};
    const stages = Object.entries(md.stage_seconds || {}).map(([k, v]) => `${k} ${Number(v).toFixed(1)} s`).join(", ");
    const models = (md.models_used || []).map((m) => h("div", {},
      `${(SLOT_BARS[m.slot] || {}).label || m.slot}: ${m.name} `, h("code", {}, m.file),
      m.sha256 ? h("code", { title: "sha256" }, `${String(m.sha256).slice(0, 12)}…`) : null));
    const th = fusion.thresholds || {};
    return h("section", { class: "card", id: "metadata" }, h("h2", {}, "Model metadata"),
      h("table", { class: "meta" }, h("tbody", {},
        metaRow("File", [row.source_name, row.source && row.source.channel === "whatsapp" ? row.source.label : null]
          .filter(Boolean).join(" · ")),
        metaRow("Media", media.kind ? `${media.kind}${media.width ? `, ${media.width}×${media.height}` : ""}${
          media.fps ? `, ${Number(media.fps).toFixed(0)} fps` : ""}${md.video_duration_seconds ? `, ${Number(
          md.video_duration_seconds).toFixed(1)} s` : ""}${media.kind === "video" ? (media.has_audio ? ", with audio"
          : ", no audio") : ""}` : null),
        metaRow("Codecs", [media.container, media.video_codec, media.audio_codec].filter(Boolean).join(" / ")),
        metaRow("Models", models.length ? models : null),
        metaRow("Fusion", fusion.method ? `${fusion.method}${th.authentic_below !== undefined
          ? ` (authentic below ${th.authentic_below}, fake above ${th.fake_above})` : ""}${fusion.note
          ? ` — ${fusion.note}` : ""}` : md.fusion_method),
        metaRow("Processing", typeof md.processing_time_seconds === "number"
          ? `${md.processing_time_seconds.toFixed(1)} s on ${md.device || "?"}${stages ? ` (${stages})` : ""}` : null),
        metaRow("Frames analysed", md.frames_analyzed),
        metaRow("Warnings", (md.warnings || []).join("; ")),
        metaRow("Created", when(row.created_at)),
        metaRow("Task", row.task_id),
        metaRow("Schema", ds.schema_version || md.schema_version))));
  }

  function renderDetail(row) {
    const ds = row.detector_scores || {};
    const md = row.model_metadata || {};
    const out = [backLink(), verdictBanner(row, ds)];
    if (BUSY.has(row.status)) {
      out.push(h("p", { class: "muted" }, "This page updates by itself when the analysis finishes."));
      return out;
    }
    if (!row.has_detector_scores && !Object.keys(ds).length) {
      out.push(h("section", { class: "card", id: "no-scores" }, h("h2", {}, "Details"),
        h("p", {}, row.status === "failed" ? "The analysis did not produce scores."
          : "No per-detector scores were stored for this detection (it was made before the multimodal detector, "
            + "e.g. an older image check). The verdict and confidence above are all it has."),
        h("table", { class: "meta" }, h("tbody", {},
          metaRow("File type", row.file_type), metaRow("Result", row.detection_result),
          metaRow("Created", when(row.created_at)), metaRow("Task", row.task_id)))));
      return out;
    }
    out.push(figureCard(row, ds), credentialsCard(ds));
    out.push(h("section", { class: "card", id: "scores" }, h("h2", {}, "Detector scores"),
      h("p", { class: "muted scale-note" }, SPEC.orientation_note),
      BARS.map((b) => scoreBar(b, ds))));
    const duration = md.video_duration_seconds || 0;
    const charts = Object.keys(SLOT_BARS)
      .filter((slot) => ((ds.detectors || {})[slot] || {}).timeline && ds.detectors[slot].timeline.length)
      .map((slot) => timelineChart(slot, ds.detectors[slot], duration, weakEvidence(ds, slot)));
    out.push(h("section", { class: "card", id: "timelines" }, h("h2", {}, "Timeline"),
      charts.length ? [h("p", { class: "muted scale-note" }, SPEC.timeline_note)].concat(charts) : h("p", { class: "muted" }, "No per-second scores for this file.")));
    out.push(facesCard(ds.tracks || []));
    out.push(metadataCard(row, ds, md));
    return out;
  }

  // -- routing --------------------------------------------------------------------------------------
  function route() {
    stop();
    nav += 1;
    const m = location.hash.match(/^#\/d\/(.+)$/);
    if (m) showDetail(decodeURIComponent(m[1]));
    else showHistory();
  }

  const keyInput = document.getElementById("api-key");
  keyInput.value = apiKey();
  document.getElementById("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(KEY_STORE, keyInput.value.trim());
    route();
  });
  window.addEventListener("hashchange", route);
  fetch("/labels.json").then((r) => r.json()).then((spec) => {
    SPEC = spec;
    BARS = spec.bars;
    SLOT_BARS = Object.fromEntries(spec.bars.filter((b) => b.slot).map((b) => [b.slot, b]));
    route();
  }).catch((err) => app.replaceChildren(notice(`Cannot load the page's labels: ${err.message}`, true)));
})();
