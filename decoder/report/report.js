// p11spy report: draws the timeline and the lists from the tables embedded in this page.
// Only what is in view is drawn (rows of the lists, bars of the timeline), so a trace of a
// million calls scrolls as one of ten. Nothing is fetched: the data is in the script blocks
// above (p11-meta: JSON; p11-calls-*, p11-kids-*: base64 little-endian columns; p11-strings:
// the decoded texts, each once).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TYPES = { i: Int32Array, d: Float64Array, f: Float32Array, b: Int8Array };
  const ROW = 22;
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;",
    ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  function bytes(text) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
    const bin = atob(text), n = bin.length, out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function column(table, name) {
    const el = $("p11-" + table + "-" + name), T = TYPES[el.dataset.type];
    const b = bytes(el.textContent.trim());
    return new T(b.buffer, b.byteOffset, b.byteLength / T.BYTES_PER_ELEMENT);
  }
  function lowerBound(arr, n, x) { // first index with arr[i] >= x (arr ascending)
    let lo = 0, hi = n;
    while (lo < hi) { const m = (lo + hi) >> 1; if (arr[m] < x) lo = m + 1; else hi = m; }
    return lo;
  }
  function fmtDur(us) {
    if (!(us >= 0)) return "";
    if (us < 1000) return us.toFixed(us < 10 ? 1 : 0) + " µs";
    if (us < 1e6) return (us / 1000).toFixed(1) + " ms";
    return (us / 1e6).toFixed(2) + " s";
  }

  let M, C, K, S, nC, nK, t0, callFail, kidStart, kidIdx, view, kidView, selected = -1;

  function load() {
    M = JSON.parse($("p11-meta").textContent);
    C = {}; K = {};
    for (const k of ["seq", "fn", "rv", "th", "t", "d", "det", "log"]) C[k] = column("calls", k);
    for (const k of ["seq", "parent", "kind", "label", "code", "fail", "th", "t", "d", "det"])
      K[k] = column("kids", k);
    S = JSON.parse($("p11-strings").textContent);
    nC = C.seq.length; nK = K.seq.length;
    callFail = new Uint8Array(nC);
    for (let i = 0; i < nC; i++) callFail[i] = C.rv[i] >= 0 && M.codes[C.rv[i]].fail ? 1 : 0;
    kidStart = new Int32Array(nC + 1); // the kids of call i: kidIdx[kidStart[i] .. kidStart[i+1]]
    for (let j = 0; j < nK; j++) if (K.parent[j] >= 0) kidStart[K.parent[j] + 1]++;
    for (let i = 0; i < nC; i++) kidStart[i + 1] += kidStart[i];
    kidIdx = new Int32Array(kidStart[nC]);
    const fill = kidStart.slice(0, nC);
    for (let j = 0; j < nK; j++) if (K.parent[j] >= 0) kidIdx[fill[K.parent[j]]++] = j;
    t0 = Infinity;
    for (let i = 0; i < nC; i++) if (C.t[i] < t0) t0 = C.t[i];
    for (let j = 0; j < nK; j++) if (K.t[j] < t0) t0 = K.t[j];
  }

  // --- names ---------------------------------------------------------------------------------
  const fnName = (i) => M.names[C.fn[i]];
  const code = (c) => (c >= 0 ? M.codes[c] : null);
  const rvText = (i) => { const c = code(C.rv[i]); return c ? c.key : "(not recorded)"; };
  const thread = (th) => { const t = M.threads[th] || {}; return "T" + th + " pid " + t.pid + " tid " + t.tid; };
  const rel = (t) => (t >= 0 && t0 < Infinity ? "+" + (t - t0).toFixed(3) + " s" : "");

  // --- the call list ---------------------------------------------------------------------------
  function VList(el, rowHtml, onPick) {
    this.el = el; this.spacer = el.querySelector(".spacer"); this.rowHtml = rowHtml;
    this.items = new Int32Array(0); this.onPick = onPick; this.sel = -1;
    el.addEventListener("scroll", () => this.draw());
    el.addEventListener("click", (ev) => {
      const r = ev.target.closest(".row"); if (r) onPick(+r.dataset.i);
    });
  }
  VList.prototype.set = function (items) {
    this.items = items; this.spacer.style.height = items.length * ROW + "px"; this.draw();
  };
  VList.prototype.draw = function () {
    const top = this.el.scrollTop, h = this.el.clientHeight || 420;
    const a = Math.max(0, Math.floor(top / ROW) - 5);
    const b = Math.min(this.items.length, Math.ceil((top + h) / ROW) + 5);
    let html = "";
    for (let k = a; k < b; k++) html += this.rowHtml(this.items[k], k * ROW, this.items[k] === this.sel);
    this.spacer.innerHTML = html;
  };
  VList.prototype.reveal = function (item) {
    this.sel = item;
    const k = this.items.indexOf(item);
    if (k >= 0) {
      const y = k * ROW, top = this.el.scrollTop, h = this.el.clientHeight;
      if (y < top || y + ROW > top + h) this.el.scrollTop = Math.max(0, y - h / 3);
    }
    this.draw();
    return k >= 0;
  };

  function callRow(i, y, sel) {
    const n = kidStart[i + 1] - kidStart[i];
    return '<div class="row call' + (callFail[i] ? " fail" : "") + (sel ? " sel" : "") +
      '" data-i="' + i + '" data-seq="' + C.seq[i] + '" style="top:' + y + 'px">' +
      '<span class="c-seq">#' + C.seq[i] + '</span><span class="c-time">' + rel(C.t[i]) +
      '</span><span class="c-th">T' + C.th[i] + '</span><span class="c-fn">' + esc(fnName(i)) +
      '</span><span class="c-rv">' + esc(rvText(i)) + '</span><span class="c-dur">' +
      fmtDur(C.d[i]) + '</span><span class="c-kids">' + (n ? n + " APDU" : "") + "</span></div>";
  }
  function kidRow(j, y, sel) {
    const c = code(K.code[j]), p = K.parent[j];
    return '<div class="row kidrow' + (K.fail[j] ? " fail" : "") + (sel ? " sel" : "") +
      '" data-i="' + j + '" style="top:' + y + 'px"><span class="c-seq">#' + K.seq[j] +
      '</span><span class="c-time">' + rel(K.t[j]) + '</span><span class="k-label">' +
      esc(M.names[K.label[j]]) + '</span><span class="k-code">' +
      esc(c ? c.key + ": " + c.short : "") + '</span><span class="c-dur">' + fmtDur(K.d[j]) +
      '</span><span class="k-under">' + (p >= 0 ? "under #" + C.seq[p] + " " + esc(fnName(p)) : "") +
      "</span></div>";
  }

  // --- search and filter -------------------------------------------------------------------------
  function computeView() {
    const q = $("search").value.trim().toLowerCase(), failOnly = $("failures-only").checked;
    if (!q && !failOnly) { view = new Int32Array(nC); for (let i = 0; i < nC; i++) view[i] = i; }
    else {
      let hit = null;
      if (q) {
        const fnHit = M.names.map((n) => n.toLowerCase().includes(q));
        const codeHit = M.codes.map((c) => (c.key + " " + c.short).toLowerCase().includes(q));
        const strHit = new Uint8Array(S.length);
        for (let s = 0; s < S.length; s++) if (S[s].toLowerCase().includes(q)) strHit[s] = 1;
        const seqQ = /^#?\d+$/.test(q) ? +q.replace("#", "") : -1;
        hit = new Uint8Array(nC);
        for (let i = 0; i < nC; i++)
          if (fnHit[C.fn[i]] || (C.rv[i] >= 0 && codeHit[C.rv[i]]) || (C.det[i] >= 0 && strHit[C.det[i]]) || (C.log[i] >= 0 && strHit[C.log[i]]) || C.seq[i] === seqQ) hit[i] = 1;
        for (let j = 0; j < nK; j++) {
          const p = K.parent[j];
          if (p >= 0 && !hit[p] && (fnHit[K.label[j]] || (K.code[j] >= 0 && codeHit[K.code[j]]) || (K.det[j] >= 0 && strHit[K.det[j]]) || K.seq[j] === seqQ)) hit[p] = 1;
        }
      }
      const out = [];
      for (let i = 0; i < nC; i++) if ((!failOnly || callFail[i]) && (!hit || hit[i])) out.push(i);
      view = Int32Array.from(out);
    }
    $("count").textContent = view.length.toLocaleString() + " of " + nC.toLocaleString() + " calls";
    calls.set(view);
  }
  function computeKidView() {
    const failOnly = $("kid-failures-only").checked, out = [];
    const q = $("kid-search").value.trim().toLowerCase();
    let labelHit = null, codeHit = null, strHit = null;
    if (q) {
      labelHit = M.names.map((n) => n.toLowerCase().includes(q));
      codeHit = M.codes.map((c) => (c.key + " " + c.short).toLowerCase().includes(q));
      strHit = new Uint8Array(S.length);
      for (let s = 0; s < S.length; s++) if (S[s].toLowerCase().includes(q)) strHit[s] = 1;
    }
    for (let j = 0; j < nK; j++) {
      if (failOnly && !K.fail[j]) continue;
      if (q && !(labelHit[K.label[j]] || (K.code[j] >= 0 && codeHit[K.code[j]]) || (K.det[j] >= 0 && strHit[K.det[j]]))) continue;
      out.push(j);
    }
    kidView = Int32Array.from(out);
    $("kid-count").textContent = kidView.length.toLocaleString() + " of " + nK.toLocaleString();
    kids.set(kidView);
  }

  // --- the detail pane --------------------------------------------------------------------------
  function explainBlock(c, cls) {
    return '<div class="explain ' + cls + '"><pre>' + esc(c.text) + "</pre></div>";
  }
  function kidHtml(j, n) {
    const c = code(K.code[j]), fail = K.fail[j];
    let h = '<div class="kid' + (fail ? " fail" : "") + '" data-seq="' + K.seq[j] + '">' +
      '<div class="kid-head">' + n + ". #" + K.seq[j] + " " + esc(M.names[K.label[j]]) +
      (c ? " → " + esc(c.key) + ": " + esc(c.short) : "") + " " + fmtDur(K.d[j]) + "</div>";
    h += K.det[j] >= 0 ? "<pre>" + esc(S[K.det[j]]) + "</pre>"
      : '<p class="dim">(not embedded: size limit; <code>p11spy decode</code> shows it)</p>';
    if (fail && c) h += explainBlock(c, "kid-explain");
    return h + "</div>";
  }
  function showCall(i) {
    selected = i;
    const fail = callFail[i], c = code(C.rv[i]), n = kidStart[i + 1] - kidStart[i];
    let h = '<h3 class="title ' + (fail ? "fail" : "ok") + '">#' + C.seq[i] + " " +
      esc(fnName(i)) + " → " + esc(rvText(i)) + "</h3>";
    const when = C.t[i] >= 0 ? new Date(C.t[i] * 1000).toISOString() + " (" + rel(C.t[i]) + ")" : "";
    h += '<p class="dim">' + esc(thread(C.th[i])) + " · " + when + " · " + fmtDur(C.d[i]) + "</p>";
    if (fail && c) h += '<div class="section">What ' + esc(c.key) + " means</div>" + explainBlock(c, "rv-explain");
    const found = M.findings[String(i)] || [];
    if (found.length) {
      h += '<div class="section">Diagnosis</div><ul class="call-findings">';
      for (const f of found) h += "<li><b>[" + esc(f.severity) + "]</b> " + esc(f.title) + "<br><span class=\"dim\">what to do: " + esc(f.action) + "</span></li>";
      h += "</ul>";
    }
    h += '<div class="section">Arguments</div>';
    h += C.det[i] >= 0 ? '<pre class="args">' + esc(S[C.det[i]] || "(none)") + "</pre>"
      : '<p class="args dim">(not embedded: size limit; <code>p11spy decode</code> shows them)</p>';
    if (C.log[i] >= 0) h += '<div class="section">Log lines</div><pre class="logs">' + esc(S[C.log[i]]) + "</pre>";
    if (n) {
      h += '<div class="section">APDUs and PC/SC calls (' + n + ')</div><div class="kids">';
      const max = Math.min(n, 500);
      for (let k = 0; k < max; k++) h += kidHtml(kidIdx[kidStart[i] + k], k + 1);
      if (n > max) h += '<p class="dim">… ' + (n - max) + " more (the list below has them all)</p>";
      h += "</div>";
    }
    $("detail").innerHTML = h;
    $("detail").scrollTop = 0;
    if (!calls.reveal(i)) { $("search").value = ""; $("failures-only").checked = false; computeView(); calls.reveal(i); }
    tl.reveal(i);
  }
  function showKid(j) {
    if (K.parent[j] >= 0) { showCall(K.parent[j]); return; }
    selected = -1;
    $("detail").innerHTML = '<h3 class="title ' + (K.fail[j] ? "fail" : "ok") + '">#' + K.seq[j] + " " +
      esc(M.names[K.label[j]]) + '</h3><p class="dim">' + esc(thread(K.th[j])) + "</p>" +
      '<div class="kids">' + kidHtml(j, 1) + "</div>";
    kids.reveal(j);
  }
  function bySeq(seq) {
    const i = lowerBound(C.seq, nC, seq);
    if (i < nC && C.seq[i] === seq) return showCall(i);
    const j = lowerBound(K.seq, nK, seq);
    if (j < nK && K.seq[j] === seq) return showKid(j);
  }
  function nextFailure(from) {
    for (let k = 0; k < view.length; k++) {
      const i = view[k];
      if (callFail[i] && i > from) { showCall(i); return; }
    }
  }

  // --- the timeline -------------------------------------------------------------------------------
  // Items per lane (thread): calls (i >= 0) and APDUs under no call (-j-1), sorted by start.
  const LANE = 30, AXIS = 22, LABEL = 120;
  const tl = { x0: 0, x1: 1, lanes: [], byThread: new Map(), time: true };
  function itemStart(it) { return it >= 0 ? tl.cs[it] : tl.ks[-it - 1]; }
  function buildTimeline() {
    let allTimed = true;
    for (let i = 0; i < nC && allTimed; i++) if (!(C.t[i] >= 0)) allTimed = false;
    for (let j = 0; j < nK && allTimed; j++) if (K.parent[j] < 0 && !(K.t[j] >= 0)) allTimed = false;
    tl.time = allTimed && nC + nK > 0;
    tl.cs = new Float64Array(nC); tl.ce = new Float64Array(nC);
    tl.ks = new Float64Array(nK); tl.ke = new Float64Array(nK);
    if (tl.time) { // milliseconds from the first event
      for (let i = 0; i < nC; i++) { tl.cs[i] = (C.t[i] - t0) * 1000; tl.ce[i] = tl.cs[i] + (C.d[i] >= 0 ? C.d[i] / 1000 : 0); }
      for (let j = 0; j < nK; j++) {
        if (K.t[j] >= 0) { tl.ks[j] = (K.t[j] - t0) * 1000; tl.ke[j] = tl.ks[j] + (K.d[j] >= 0 ? K.d[j] / 1000 : 0); }
        else if (K.parent[j] >= 0) { tl.ks[j] = tl.cs[K.parent[j]]; tl.ke[j] = tl.ce[K.parent[j]]; }
      }
    } else { // no times: one unit per call, in trace order, its APDUs sharing it
      const order = [];
      for (let i = 0; i < nC; i++) order.push([C.seq[i], i]);
      for (let j = 0; j < nK; j++) if (K.parent[j] < 0) order.push([K.seq[j], -j - 1]);
      order.sort((a, b) => a[0] - b[0]);
      order.forEach(([, it], x) => { if (it >= 0) { tl.cs[it] = x; tl.ce[it] = x + 0.8; } else { tl.ks[-it - 1] = x; tl.ke[-it - 1] = x + 0.8; } });
      for (let i = 0; i < nC; i++) {
        const a = kidStart[i], n = kidStart[i + 1] - a;
        for (let k = 0; k < n; k++) { const j = kidIdx[a + k]; tl.ks[j] = tl.cs[i] + 0.8 * k / n; tl.ke[j] = tl.cs[i] + 0.8 * (k + 1) / n; }
      }
    }
    const lanes = new Map();
    const add = (th, it) => { if (!lanes.has(th)) lanes.set(th, []); lanes.get(th).push(it); };
    for (let i = 0; i < nC; i++) add(C.th[i], i);
    for (let j = 0; j < nK; j++) if (K.parent[j] < 0) add(K.th[j], -j - 1);
    let lo = Infinity, hi = -Infinity;
    tl.lanes = [...lanes.keys()].sort((a, b) => a - b).map((th, n) => {
      const items = Int32Array.from(lanes.get(th));
      let sorted = true; // calls are written when they return: mostly in order already
      for (let q = 1; q < items.length && sorted; q++) if (itemStart(items[q]) < itemStart(items[q - 1])) sorted = false;
      if (!sorted) {
        const keys = Float64Array.from(items, itemStart), order = new Int32Array(items.length);
        for (let q = 0; q < order.length; q++) order[q] = q;
        order.sort((a, b) => keys[a] - keys[b]);
        const copy = items.slice();
        for (let q = 0; q < order.length; q++) items[q] = copy[order[q]];
      }
      const start = new Float64Array(items.length), end = new Float64Array(items.length), maxEnd = new Float64Array(items.length);
      let m = -Infinity;
      items.forEach((it, k) => {
        start[k] = itemStart(it); end[k] = it >= 0 ? tl.ce[it] : tl.ke[-it - 1];
        m = Math.max(m, end[k]); maxEnd[k] = m; lo = Math.min(lo, start[k]); hi = Math.max(hi, end[k]);
      });
      tl.byThread.set(th, n);
      const fq = [];
      items.forEach((it, q) => { if (it >= 0 ? callFail[it] : K.fail[-it - 1]) fq.push(q); });
      const fails = Int32Array.from(fq), failStart = Float64Array.from(fq, (q) => start[q]);
      const failMaxEnd = Float64Array.from(fq, (q) => maxEnd[q]);
      return { th, items, start, end, maxEnd, fails, failStart, failMaxEnd };
    });
    if (!(hi > lo)) { lo = lo === Infinity ? 0 : lo; hi = lo + 1; }
    tl.lo = lo; tl.hi = hi + (hi - lo) * 0.01; tl.x0 = tl.lo; tl.x1 = tl.hi;
    $("tl-mode").textContent = tl.time ? "x: time" : "x: call order (this trace records no times)";
    const cv = $("timeline");
    cv.height = AXIS + Math.max(1, tl.lanes.length) * LANE + 4;
  }
  function drawTimeline() {
    const cv = $("timeline"), w = cv.clientWidth || 800;
    if (cv.width !== w) cv.width = w;
    const g = cv.getContext("2d"), W = w - LABEL, x0 = tl.x0, x1 = tl.x1, k = W / (x1 - x0);
    const X = (x) => LABEL + (x - x0) * k;
    g.clearRect(0, 0, cv.width, cv.height);
    g.font = "11px sans-serif"; g.textBaseline = "middle";
    g.fillStyle = "#444"; // axis
    for (let n = 0; n <= 6; n++) {
      const x = x0 + (x1 - x0) * n / 6, px = LABEL + W * n / 6;
      g.fillRect(px, AXIS - 6, 1, 6);
      g.fillText(tl.time ? (x >= 1000 ? (x / 1000).toFixed(3) + " s" : x.toFixed(2) + " ms") : "call " + Math.round(x), Math.min(px + 2, w - 60), 8);
    }
    tl.lanes.forEach((L, n) => {
      const y = AXIS + n * LANE;
      g.fillStyle = n % 2 ? "#fafafa" : "#f2f2f2"; g.fillRect(0, y, w, LANE - 2);
      g.fillStyle = "#333"; const t = M.threads[L.th] || {};
      g.fillText("T" + L.th + " " + (t.pid === t.tid ? "pid " + t.pid : t.pid + "/" + t.tid), 4, y + 10, LABEL - 8);
      drawLane(g, X, L, L.start, L.maxEnd, null, y, w, x0, x1, k);
      drawLane(g, X, L, L.failStart, L.failMaxEnd, L.fails, y, w, x0, x1, k); // every failure
      if (selected >= 0 && tl.byThread.get(C.th[selected]) === n) {
        const l = Math.max(X(tl.cs[selected]), LABEL), r = Math.min(Math.max(X(tl.ce[selected]), l + 2), w);
        if (r > LABEL && l < w) { g.strokeStyle = "#000"; g.lineWidth = 2; g.strokeRect(l, y + 1, r - l, 16); }
      }
    });
  }
  // The bars of one lane in view (or, given fails, only its failures). A bar narrower than a
  // pixel shares it with its neighbours: the next one drawn is the first of the next pixel, so
  // a redraw costs the pixels in view, not the calls.
  function drawLane(g, X, L, starts, maxEnd, fails, y, w, x0, x1, k) {
    const n = starts.length;
    let q = lowerBound(maxEnd, n, x0), prevL = -1, prevR = -1;
    while (q < n && starts[q] <= x1) {
      const at = fails ? fails[q] : q, it = L.items[at];
      const p0 = X(L.start[at]), p1 = Math.max(X(L.end[at]), p0 + 1);
      const fail = it >= 0 ? callFail[it] : K.fail[-it - 1];
      const l = Math.max(p0, LABEL), r = Math.min(p1, w);
      const covered = l >= prevL && r <= prevR && (fails || !fail); // under the bar just drawn
      if (p1 >= LABEL && !covered) {
        prevL = l; prevR = r;
        if (it >= 0) {
          g.fillStyle = fail ? "#c62828" : "#5c7fa3"; g.fillRect(l, y + 2, Math.max(fail ? 3 : 1, r - l), 14);
          if (r - l > 50) { g.fillStyle = "#fff"; g.fillText(fnName(it), l + 3, y + 9, r - l - 6); }
          if (r - l >= 3) for (let z = kidStart[it]; z < kidStart[it + 1]; z++) drawKid(g, X, kidIdx[z], y, w);
        } else drawKid(g, X, -it - 1, y, w);
      }
      const next = x0 + (Math.floor(p0) + 1 - LABEL) / k; // where the next pixel starts
      const q2 = p1 - p0 <= 1 ? lowerBound(starts, n, next) : q + 1;
      q = q2 > q + 1 && maxEnd[q2 - 1] <= next ? q2 : q + 1; // skip only what ends in this pixel
    }
  }
  function drawKid(g, X, j, y, w) {
    const p0 = Math.max(X(tl.ks[j]), LABEL), p1 = Math.min(Math.max(X(tl.ke[j]), p0 + 1), w);
    if (p1 < LABEL || p0 > w) return;
    g.fillStyle = K.fail[j] ? "#e65100" : K.kind[j] === 0 ? "#26a69a" : "#9e9e9e";
    g.fillRect(p0, y + 19, Math.max(1, p1 - p0 - 0.5), 7);
  }
  function hit(ev) {
    const cv = $("timeline"), r = cv.getBoundingClientRect();
    const px = ev.clientX - r.left, py = ev.clientY - r.top, L = tl.lanes[Math.floor((py - AXIS) / LANE)];
    if (!L || px < LABEL) return;
    const k = (cv.width - LABEL) / (tl.x1 - tl.x0), x = tl.x0 + (px - LABEL) / k, tol = 3 / k;
    let best = null, bestD = Infinity;
    for (let q = lowerBound(L.maxEnd, L.items.length, x - tol); q < L.items.length && L.start[q] <= x + tol; q++) {
      const d = x < L.start[q] ? L.start[q] - x : x > L.end[q] ? x - L.end[q] : 0;
      if (d <= tol && d < bestD) { best = L.items[q]; bestD = d; }
    }
    if (best !== null) { if (best >= 0) showCall(best); else showKid(-best - 1); }
  }
  tl.reveal = function (i) {
    if (!tl.lanes.length) return;
    if (tl.cs[i] < tl.x0 || tl.ce[i] > tl.x1) {
      const span = tl.x1 - tl.x0, mid = (tl.cs[i] + tl.ce[i]) / 2;
      tl.x0 = mid - span / 2; tl.x1 = mid + span / 2;
    }
    drawTimeline();
  };
  function wireTimeline() {
    const cv = $("timeline");
    let drag = null;
    cv.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = cv.getBoundingClientRect(), f = Math.pow(1.2, ev.deltaY / 100);
      const x = tl.x0 + (ev.clientX - r.left - LABEL) / (cv.width - LABEL) * (tl.x1 - tl.x0);
      tl.x0 = x - (x - tl.x0) * f; tl.x1 = x + (tl.x1 - x) * f;
      drawTimeline();
    }, { passive: false });
    cv.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, x0: tl.x0, x1: tl.x1, moved: false }; });
    window.addEventListener("mousemove", (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      if (!drag.moved) return;
      const d = dx / (cv.width - LABEL) * (drag.x1 - drag.x0);
      tl.x0 = drag.x0 - d; tl.x1 = drag.x1 - d; drawTimeline();
    });
    window.addEventListener("mouseup", (ev) => { if (drag && !drag.moved && ev.target === cv) hit(ev); drag = null; });
    $("tl-reset").addEventListener("click", () => { tl.x0 = tl.lo; tl.x1 = tl.hi; drawTimeline(); });
    $("tl-focus").addEventListener("click", () => {
      if (selected < 0) return;
      const span = Math.max(tl.ce[selected] - tl.cs[selected], (tl.hi - tl.lo) * 1e-6);
      tl.x0 = tl.cs[selected] - span; tl.x1 = tl.ce[selected] + span; drawTimeline();
    });
    window.addEventListener("resize", () => { drawTimeline(); calls.draw(); kids.draw(); });
  }

  // --- start -------------------------------------------------------------------------------------
  let calls, kids;
  function start() {
    load();
    calls = new VList($("call-list"), callRow, showCall);
    kids = new VList($("kid-list"), kidRow, showKid);
    let timer = 0;
    $("search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(computeView, 200); });
    $("failures-only").addEventListener("change", computeView);
    $("kid-failures-only").addEventListener("change", computeKidView);
    let kidTimer = 0;
    $("kid-search").addEventListener("input", () => { clearTimeout(kidTimer); kidTimer = setTimeout(computeKidView, 200); });
    $("first-failure").addEventListener("click", () => nextFailure(-1));
    $("next-failure").addEventListener("click", () => nextFailure(selected));
    document.addEventListener("click", (ev) => {
      const a = ev.target.closest("a.seq");
      if (a) { ev.preventDefault(); bySeq(+a.dataset.seq); $("calls-section").scrollIntoView(); }
    });
    performance.mark("p11spy-loaded");
    computeView(); computeKidView();
    performance.mark("p11spy-lists");
    setTimeout(() => { // the lists are usable while the timeline is laid out
      buildTimeline(); wireTimeline(); drawTimeline();
      $("loading").classList.add("done");
      document.body.dataset.ready = "1";
      performance.mark("p11spy-ready");
    }, 0);
  }
  // Paint what is already there (header, diagnosis) before the tables are read.
  requestAnimationFrame(() => setTimeout(() => {
    try { start(); } catch (e) { $("loading").textContent = "This page could not read its tables: " + e; throw e; }
  }, 0));
})();
