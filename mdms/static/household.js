// The household's view of its own readings, once portal.js has decrypted
// them on this device: a day, a week or a month beside the one before it,
// what it cost per time-of-use band, each released bill explained band by
// band, the neighbourhood's released average, and a CSV of any range.
// Everything here is computed in the browser; the server sent ciphertext and
// what was released already (tariff, bills, neighbourhood totals).
(function () {
  const $ = (id) => document.getElementById(id);
  const INTERVAL = 900, DAY = 86400;
  const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
                  "September", "October", "November", "December"];
  const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
  const pad = (n) => String(n).padStart(2, "0");
  const kwh = (wh) => (wh / 1000).toFixed(3);
  const euro = (uct) => "€" + (uct / 1e8).toFixed(2);  // prices are µct per Wh

  // --- tariffs: the band of an interval, exactly as common/tariff.py ---
  function bandOf(tariff, start) {
    const local = start + tariff.utc_offset_min * 60;
    const weekday = (((Math.floor(local / DAY) + 3) % 7) + 7) % 7;  // 1970-01-01: Thursday
    const hour = Math.floor((((local % DAY) + DAY) % DAY) / 3600);
    for (const r of tariff.rules) {
      if (r.days.includes(weekday) && r.from_hour <= hour && hour < r.to_hour) return r.band;
    }
    return tariff.default_band;
  }

  // --- time zones: the tariff's fixed offset, or this device's zone ---
  function fixedZone(offsetMin) {
    const sign = offsetMin < 0 ? "-" : "+", a = Math.abs(offsetMin);
    const name = offsetMin ? `UTC${sign}${Math.floor(a / 60)}${a % 60 ? ":" + pad(a % 60) : ""}` : "UTC";
    return {
      name, label: `tariff time (${name})`,
      parts(t) {
        const d = new Date((t + offsetMin * 60) * 1000);
        return { y: d.getUTCFullYear(), m: d.getUTCMonth(), d: d.getUTCDate(), h: d.getUTCHours(),
                 mi: d.getUTCMinutes(), wd: (d.getUTCDay() + 6) % 7 };
      },
      start: (y, m, d) => Date.UTC(y, m, d) / 1000 - offsetMin * 60,
    };
  }
  const deviceZone = {
    name: Intl.DateTimeFormat().resolvedOptions().timeZone || "local",
    get label() { return `this device's time (${this.name})`; },
    parts(t) {
      const d = new Date(t * 1000);
      return { y: d.getFullYear(), m: d.getMonth(), d: d.getDate(), h: d.getHours(),
               mi: d.getMinutes(), wd: (d.getDay() + 6) % 7 };
    },
    start: (y, m, d) => new Date(y, m, d).getTime() / 1000,
  };

  // --- periods ---
  function norm(y, m, d) {
    const x = new Date(Date.UTC(y, m, d));
    return { y: x.getUTCFullYear(), m: x.getUTCMonth(), d: x.getUTCDate() };
  }
  function bounds(zone, view, at) {
    if (view === "day") return [zone.start(at.y, at.m, at.d), zone.start(at.y, at.m, at.d + 1)];
    if (view === "week") {
      const wd = zone.parts(zone.start(at.y, at.m, at.d) + 3600).wd;
      return [zone.start(at.y, at.m, at.d - wd), zone.start(at.y, at.m, at.d - wd + 7)];
    }
    return [zone.start(at.y, at.m, 1), zone.start(at.y, at.m + 1, 1)];
  }
  function shift(view, at, n) {
    if (view === "day") return norm(at.y, at.m, at.d + n);
    if (view === "week") return norm(at.y, at.m, at.d + 7 * n);
    return norm(at.y, at.m + n, 1);
  }
  function title(zone, view, [a, b]) {
    const p = zone.parts(a + 3600), q = zone.parts(b - 3600);
    if (view === "day") return `${WEEKDAYS[p.wd]} ${p.d} ${MONTHS[p.m]} ${p.y}`;
    if (view === "month") return `${MONTHS[p.m]} ${p.y}`;
    return `${p.d} ${MONTHS[p.m]} – ${q.d} ${MONTHS[q.m]} ${q.y}`;
  }
  const clock = (zone, t) => { const p = zone.parts(t); return `${pad(p.h)}:${pad(p.mi)}`; };
  const date = (zone, t) => { const p = zone.parts(t); return `${p.y}-${pad(p.m + 1)}-${pad(p.d)}`; };

  // --- money: each reading priced in its band, per period and per bill ---
  function priced(rows, tariffs) {
    return rows.map((r) => {
      const t = tariffs.get(r.meter), start = r.end - INTERVAL;
      const band = t ? bandOf(t, start) : null;
      return { ...r, start, band, uct: t ? r.wh * t.prices[String(band)] : null };
    });
  }
  function byBand(rows, tariffs) {
    const out = new Map();
    for (const r of rows) {
      if (r.band === null) continue;
      const t = tariffs.get(r.meter), key = `${r.meter}|${r.band}`;
      const e = out.get(key) || { meter: r.meter, name: t.bands[String(r.band)] || `band ${r.band}`,
                                  price: t.prices[String(r.band)], wh: 0, uct: 0 };
      e.wh += r.wh;
      e.uct += r.uct;
      out.set(key, e);
    }
    return [...out.values()];
  }

  function cells(tr, values, numeric) {
    for (const [i, v] of values.entries()) {
      const td = document.createElement("td");
      td.textContent = v;
      if (numeric && numeric.includes(i)) td.className = "num";
      tr.appendChild(td);
    }
    return tr;
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }

  function show(data, decrypted) {
    const tariffs = new Map(data.meter_info.filter((m) => m.tariff).map((m) => [m.meter, m.tariff]));
    const rows = priced(decrypted, tariffs).sort((a, b) => a.end - b.end);
    const costKnown = rows.length > 0 && rows.every((r) => r.uct !== null);
    const firstTariff = data.meter_info.find((m) => m.tariff)?.tariff;
    const tariffZone = fixedZone(firstTariff ? firstTariff.utc_offset_min : 0);
    const neighbourhood = data.meter_info[0]?.neighbourhood;
    const released = (data.neighbourhood_demand[neighbourhood] || [])
      .map(([end, wh, n]) => ({ start: end - INTERVAL, avg: wh / n }));
    const state = { view: "day", zone: tariffZone, at: null };
    $("zone").options[0].textContent = tariffZone.label;
    $("zone").options[1].textContent = deviceZone.label;

    const total = rows.reduce((s, r) => s + r.wh, 0);
    $("total").textContent = `total ${kwh(total)} kWh`;
    $("count").textContent = rows.length;
    if (!rows.length) {
      $("views").hidden = true;
      $("empty").hidden = false;
      return;
    }
    const last = rows[rows.length - 1].start;

    function draw() {
      const zone = state.zone;
      if (!state.at) { const p = zone.parts(last); state.at = { y: p.y, m: p.m, d: p.d }; }
      const span = bounds(zone, state.view, state.at);
      const prev = bounds(zone, state.view, shift(state.view, state.at, -1));
      const inSpan = ([a, b]) => rows.filter((r) => r.start >= a && r.start < b);
      // A period still running (today) is compared with the same part of
      // the one before: a morning against a whole day says nothing.
      const running = last >= span[0] && last + INTERVAL < span[1];
      const cut = running ? prev[0] + (last + INTERVAL - span[0]) : prev[1];
      const now = inSpan(span), before = inSpan([prev[0], cut]);
      const sum = (rs, k) => rs.reduce((s, r) => s + r[k], 0);
      $("period").textContent = title(zone, state.view, span);
      for (const b of document.querySelectorAll("#view-buttons button")) {
        b.setAttribute("aria-pressed", String(b.dataset.view === state.view));
      }
      $("prev").disabled = !rows.some((r) => r.start < span[0]);
      $("next").disabled = !rows.some((r) => r.start >= span[1]);

      const name = state.view;
      $("this-label").textContent = running ? `This ${name} so far` : `This ${name}`;
      $("prev-label").textContent = running ? `The ${name} before, to the same time`
        : `The ${name} before`;
      const line = (rs) => `${kwh(sum(rs, "wh"))} kWh` + (costKnown ? `, ${euro(sum(rs, "uct"))}` : "");
      $("this-period").textContent = now.length ? line(now) : "no readings";
      $("prev-period").textContent = before.length ? line(before) : "no readings";
      const change = before.length && now.length && sum(before, "wh")
        ? Math.round((sum(now, "wh") / sum(before, "wh") - 1) * 100) : null;
      $("change").textContent = change === null ? "nothing to compare with" :
        `${change > 0 ? "+" : ""}${change} % energy against the previous ${name}`;

      // Chart: quarter hours for a day, days for a week or a month; the
      // neighbourhood's average household beside the household's own.
      const mine = new Map(), theirs = new Map();
      const bucket = state.view === "day" ? (t) => t
        : (t) => { const p = zone.parts(t); return zone.start(p.y, p.m, p.d); };
      for (const r of now) mine.set(bucket(r.start), (mine.get(bucket(r.start)) || 0) + r.wh);
      for (const r of released) {
        if (r.start >= span[0] && r.start < span[1]) {
          theirs.set(bucket(r.start), (theirs.get(bucket(r.start)) || 0) + r.avg);
        }
      }
      const day = state.view === "day", scale = day ? 1 : 1000;
      const series = [{ name: "your home", xs: [...mine.keys()], ys: [...mine.values()].map((v) => v / scale) }];
      if (theirs.size) {
        series.push({ name: "average home in your neighbourhood", xs: [...theirs.keys()],
                      ys: [...theirs.values()].map((v) => v / scale) });
      }
      GVChart.draw($("usage"), {
        kind: day ? "line" : "bar", series,
        label: `Your energy use, ${title(zone, state.view, span)}`,
        x: { title: `${day ? "time" : "day"}, ${zone.name}`, time: day,
             format: day ? (t) => clock(zone, t) : (t) => date(zone, t).slice(5) },
        y: day ? { title: "energy per quarter hour (Wh)", unit: "Wh", digits: 0 }
               : { title: "energy per day (kWh)", unit: "kWh", digits: 3 },
        empty: `No readings in this ${name}.`,
      });
      $("nbh-note").textContent = theirs.size
        ? `The neighbourhood line is the released total of ${neighbourhood} divided by the number of homes in it, for the quarter hours released so far.`
        : "Your neighbourhood's demand for this period has not been released yet.";

      // Money: what this period cost, band by band.
      const bands = byBand(now, tariffs);
      $("money").hidden = !costKnown;
      $("no-tariff").hidden = costKnown;
      fill(document.querySelector("#bands tbody"), bands.map((e) =>
        cells(document.createElement("tr"), [e.name, kwh(e.wh), (e.price / 1000).toFixed(2),
                                             euro(e.uct)], [1, 2, 3])));
      $("bands-total").textContent = euro(sum(bands, "uct"));
    }

    // The released bills, each explained band by band from the readings.
    const billRows = [];
    for (const b of data.bills) {
      const a = b.first_day * DAY, z = (b.first_day + b.days) * DAY;
      const mine = rows.filter((r) => r.meter === b.meter && r.end > a && r.end <= z);
      const bands = byBand(mine, tariffs);
      const computed = bands.reduce((s, e) => s + e.uct, 0);
      const when = `${date(fixedZone(0), a)}${b.days > 1 ? " – " + date(fixedZone(0), z - DAY) : ""}`;
      for (const e of bands) {
        billRows.push(cells(document.createElement("tr"), [when, e.name, kwh(e.wh),
                      (e.price / 1000).toFixed(2), euro(e.uct), ""], [2, 3, 4]));
      }
      // A bill is released in whole cents, rounded up or down at random by
      // the key holders (so that it says nothing finer than its total).
      const check = !tariffs.has(b.meter) ? "your tariff is not known here, so it cannot be checked"
        : Math.abs(computed - b.amount_uct) < 1e6
          ? `matches your readings to the cent (exactly ${(computed / 1e6).toFixed(3)} ct, rounded at random)`
          : `your readings give ${euro(computed)} (a late reading counts when it arrived)`;
      const tr = cells(document.createElement("tr"), [when, "bill", "", "", euro(b.amount_uct), check], [4]);
      tr.className = "bill-total";
      tr.dataset.billed = b.amount_uct;
      tr.dataset.computed = computed;
      billRows.push(tr);
    }
    fill(document.querySelector("#bills tbody"), billRows);
    $("no-bills").hidden = data.bills.length > 0;
    $("bills").hidden = data.bills.length === 0;

    // Every reading, for whoever wants the raw numbers.
    fill(document.querySelector("#readings tbody"), rows.map((r) => {
      const tr = cells(document.createElement("tr"), [r.meter, `${date(state.zone, r.start)} ${clock(state.zone, r.start)}`, r.wh], [2]);
      tr.dataset.end = r.end;
      tr.dataset.wh = r.wh;
      return tr;
    }));

    // CSV of a chosen range, in the Green Button "download my data" layout.
    const first = rows[0].start;
    $("csv-from").value = date(state.zone, first);
    $("csv-to").value = date(state.zone, last);
    $("csv-form").onsubmit = (ev) => {
      ev.preventDefault();
      const zone = state.zone, [fy, fm, fd] = $("csv-from").value.split("-").map(Number);
      const [ty, tm, td] = $("csv-to").value.split("-").map(Number);
      const a = zone.start(fy, fm - 1, fd), z = zone.start(ty, tm - 1, td + 1);
      const lines = ["TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES"].concat(
        rows.filter((r) => r.start >= a && r.start < z).map((r) => [
          "Electric usage", date(zone, r.start), clock(zone, r.start), clock(zone, r.end - 60),
          kwh(r.wh), "kWh", r.uct === null ? "" : euro(r.uct), `meter ${r.meter}; ${zone.name}`,
        ].join(",")));
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
      link.download = `my-electricity-${$("csv-from").value}-to-${$("csv-to").value}.csv`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      $("csv-status").textContent = `${lines.length - 1} readings saved.`;
    };

    for (const b of document.querySelectorAll("#view-buttons button")) {
      b.onclick = () => { state.view = b.dataset.view; draw(); };
    }
    $("prev").onclick = () => { state.at = shift(state.view, state.at, -1); draw(); };
    $("next").onclick = () => { state.at = shift(state.view, state.at, 1); draw(); };
    $("zone").onchange = () => {
      state.zone = $("zone").value === "device" ? deviceZone : tariffZone;
      state.at = null;
      draw();
    };
    draw();
    if (window.GVTables) document.querySelectorAll("#app table").forEach(GVTables.label);
  }

  window.GVHousehold = { show, bandOf };
})();
