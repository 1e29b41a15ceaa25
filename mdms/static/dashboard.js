// Charts of released neighbourhood demand (chart.js draws them). The data
// comes from a JSON block in the page: no inline code, no CDN.
(function () {
  const el = document.getElementById("chart-data");
  if (!el || !window.GVChart) return;
  const data = JSON.parse(el.textContent);
  const when = (t) => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
  GVChart.draw(document.getElementById("hourly"), {
    kind: "line", label: "Released hourly demand per neighbourhood, kWh",
    series: Object.entries(data.hourly).map(([n, pts]) => ({
      name: n, xs: pts.map((p) => p[0]), ys: pts.map((p) => p[1]) })),
    x: { title: "time (UTC)", format: when, time: true },
    y: { title: "energy per hour (kWh)", unit: "kWh", digits: 3 },
    empty: "No demand released yet: ask the privacy guardian below.",
  });
  GVChart.draw(document.getElementById("profile"), {
    kind: "bar", label: "Mean demand per hour of day per neighbourhood, kWh",
    series: Object.entries(data.profile).map(([n, ys]) => ({
      name: n, xs: ys.map((_, h) => h), ys })),
    x: { title: "hour of day (UTC)", format: (h) => `${String(h).padStart(2, "0")}:00` },
    y: { title: "mean energy (kWh)", unit: "kWh", digits: 3 },
    empty: "No demand released yet.",
  });
})();
