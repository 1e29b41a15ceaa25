// Charts of released neighbourhood demand, drawn with the locally served
// plotly.js. The data comes from a JSON block in the page (no inline code).
(function () {
  const el = document.getElementById("chart-data");
  if (!el || !window.Plotly) return;
  const data = JSON.parse(el.textContent);
  const layout = { margin: { t: 10, r: 10, b: 40, l: 50 }, legend: { orientation: "h" } };
  const hourly = Object.entries(data.hourly).map(([n, pts]) => ({
    name: n, type: "scatter", mode: "lines",
    x: pts.map((p) => new Date(p[0] * 1000).toISOString()), y: pts.map((p) => p[1]),
  }));
  Plotly.newPlot("hourly", hourly, { ...layout, yaxis: { title: "kWh" } }, { displaylogo: false });
  const profile = Object.entries(data.profile).map(([n, ys]) => ({
    name: n, type: "bar", x: ys.map((_, h) => h), y: ys,
  }));
  Plotly.newPlot("profile", profile, { ...layout, xaxis: { title: "hour of day (UTC)" } },
                 { displaylogo: false });
})();
