// Small SVG charts for the dashboard and the portal: lines or grouped bars,
// axis titles, a legend, and a hover that names the time and the unit. No
// dependencies: a few KB where plotly.js was 4.8 MB, served from here, never
// from a CDN. Every chart sits next to a table of the same numbers, so the
// SVG is an image with a summary (role="img" and aria-label) for screen readers.
//
//   GVChart.draw(host, { kind: "line" | "bar", label: "...", height: 300,
//     series: [{ name, xs: [...], ys: [...] }],
//     x: { title, format: (x) => "text", time: true if xs are Unix seconds },
//     y: { title, unit, digits } })
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#0f6e66", "#b35c00", "#3b5bdb", "#a61e4d", "#5c7f0d", "#495057"];
  const M = { top: 12, right: 12, bottom: 46, left: 58 };

  function node(name, attrs, parent, text) {
    const n = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }

  // Round tick steps (1, 2, 5 x 10^k) from below lo to above hi, about n of them.
  function ticks(lo, hi, n) {
    if (hi <= lo) hi = lo + 1;
    const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let t = Math.floor(lo / step) * step; t < hi + step - step / 1e6; t += step) out.push(t);
    return out;
  }

  // Time ticks (Unix seconds) on whole quarter hours, hours, days or weeks.
  const TIME_STEPS = [900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
  function timeTicks(lo, hi, n) {
    const step = TIME_STEPS.find((s) => s >= (hi - lo) / n) || 604800;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
    return out;
  }

  function draw(host, spec) {
    // Points without a value (an hour with no release yet) are left out.
    const series = spec.series.map((s) => {
      const keep = s.ys.map((y, j) => (y === null || y === undefined ? -1 : j)).filter((j) => j >= 0);
      return { name: s.name, xs: keep.map((j) => s.xs[j]), ys: keep.map((j) => s.ys[j]) };
    }).filter((s) => s.xs.length);
    host.replaceChildren();
    host.classList.add("gv-chart");
    if (!series.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = spec.empty || "Nothing to show yet.";
      host.appendChild(p);
      return;
    }
    const W = Math.max(280, host.clientWidth || 600), H = spec.height || 300;
    const iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    const bar = spec.kind === "bar";
    const fmtX = spec.x.format || String;
    const digits = spec.y.digits ?? 2;
    const unit = spec.y.unit ? " " + spec.y.unit : "";
    // Bars share categories (the union of xs, in order); lines a numeric axis.
    const cats = bar ? [...new Set(series.flatMap((s) => s.xs))].sort((a, b) => a - b) : null;
    const allX = series.flatMap((s) => s.xs), allY = series.flatMap((s) => s.ys);
    const x0 = Math.min(...allX), x1 = Math.max(...allX);
    const yt = ticks(Math.min(0, ...allY), Math.max(...allY), 5);
    const y0 = yt[0], y1 = yt[yt.length - 1];
    const band = bar ? iw / cats.length : 0;
    const px = bar ? (x) => M.left + band * (cats.indexOf(x) + 0.5)
                   : (x) => M.left + (x1 === x0 ? iw / 2 : (x - x0) / (x1 - x0) * iw);
    const py = (y) => M.top + ih - (y - y0) / (y1 - y0) * ih;

    const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                              "aria-label": spec.label || spec.y.title }, host);
    const axes = node("g", { class: "axes" }, svg);
    for (const t of yt) {
      node("line", { x1: M.left, x2: W - M.right, y1: py(t), y2: py(t), class: "grid" }, axes);
      node("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end" }, axes,
           t.toLocaleString(undefined, { maximumFractionDigits: 3 }));
    }
    const xTicks = bar ? cats.filter((_, i) => i % Math.ceil(cats.length / Math.max(1, iw / 70)) === 0)
                       : (spec.x.time ? timeTicks : ticks)(x0, x1, Math.max(2, Math.floor(iw / 110)))
                           .filter((t) => t >= x0 && t <= x1);
    for (const t of xTicks) {
      node("text", { x: px(t), y: M.top + ih + 16, "text-anchor": "middle" }, axes, fmtX(t));
    }
    node("text", { x: M.left + iw / 2, y: H - 6, "text-anchor": "middle", class: "title" }, axes,
         spec.x.title);
    node("text", { x: 14, y: M.top + ih / 2, "text-anchor": "middle", class: "title",
                   transform: `rotate(-90 14 ${M.top + ih / 2})` }, axes, spec.y.title);

    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      if (bar) {
        const w = band * 0.8 / series.length;
        s.xs.forEach((x, j) => {
          const top = py(Math.max(0, s.ys[j])), base = py(Math.min(0, s.ys[j]));
          node("rect", { x: px(x) - band * 0.4 + i * w, y: top, width: Math.max(1, w - 1),
                         height: Math.max(0.5, base - top), fill: color }, svg);
        });
      } else {
        const d = s.xs.map((x, j) => `${j ? "L" : "M"}${px(x).toFixed(1)},${py(s.ys[j]).toFixed(1)}`);
        node("path", { d: d.join(""), fill: "none", stroke: color, "stroke-width": 1.6 }, svg);
      }
    });
    if (series.length > 1) {
      const legend = document.createElement("ul");
      legend.className = "legend";
      series.forEach((s, i) => {
        const li = document.createElement("li");
        li.style.setProperty("--swatch", COLORS[i % COLORS.length]);
        li.textContent = s.name;
        legend.appendChild(li);
      });
      host.appendChild(legend);
    }

    // The hover: the nearest x, every series' value there, with its unit.
    const tip = document.createElement("div");
    tip.className = "tip";
    tip.hidden = true;
    host.appendChild(tip);
    const cursor = node("line", { y1: M.top, y2: M.top + ih, class: "cursor", visibility: "hidden" }, svg);
    svg.addEventListener("pointermove", (ev) => {
      const r = svg.getBoundingClientRect();
      const mx = (ev.clientX - r.left) * W / r.width;
      let best = null;
      for (const x of bar ? cats : allX) {
        if (best === null || Math.abs(px(x) - mx) < Math.abs(px(best) - mx)) best = x;
      }
      const lines = [fmtX(best)];
      for (const s of series) {
        const j = s.xs.indexOf(best);
        if (j >= 0) lines.push(`${series.length > 1 ? s.name + ": " : ""}${s.ys[j].toFixed(digits)}${unit}`);
      }
      tip.replaceChildren(...lines.map((t) => Object.assign(document.createElement("div"), { textContent: t })));
      tip.hidden = false;
      tip.style.left = `${Math.min(px(best) * r.width / W + 8, r.width - 160)}px`;
      tip.style.top = `${M.top}px`;
      cursor.setAttribute("x1", px(best));
      cursor.setAttribute("x2", px(best));
      cursor.setAttribute("visibility", "visible");
    });
    svg.addEventListener("pointerleave", () => {
      tip.hidden = true;
      cursor.setAttribute("visibility", "hidden");
    });
  }

  // Redraw on resize (a phone turned sideways), at most once per frame.
  function chart(host, spec) {
    draw(host, spec);
    let pending = false;
    new ResizeObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; draw(host, spec); });
    }).observe(host);
  }

  window.GVChart = { draw: chart };
})();
