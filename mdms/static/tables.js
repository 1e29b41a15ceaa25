// On a phone, a wide table becomes one block per row, each cell led by its
// column's name (app.css, under 600 px). The names come from the table's own
// header, copied here into each cell's data-label; tables drawn later (the
// portal's) call GVTables.label(table) again.
(function () {
  function label(table) {
    const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    if (!names.length) return;
    table.classList.add("stack");
    for (const tr of table.querySelectorAll("tbody tr")) {
      [...tr.children].forEach((td, i) => { if (names[i]) td.dataset.label = names[i]; });
    }
  }
  window.GVTables = { label };
  document.querySelectorAll("table").forEach(label);
})();
