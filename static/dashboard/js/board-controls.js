/*
 * Board controls that work on the rendered rows: filter by symbol or name, sort (watchlist
 * order, symbol, change %), keyboard navigation (j/k or arrows to move, Enter to open the
 * instrument, / to filter), and a "stale" mark on rows with no update for two minutes.
 */
"use strict";
(() => {
  const lists = document.getElementById("watchlists");
  const form = document.getElementById("board-controls");
  if (!lists || !form) return;
  const STALE_MS = 120000;
  let selected = -1;

  const rows = () => [...lists.querySelectorAll(".instrument")].filter((r) => !r.hidden);

  function apply() {
    const query = form.elements.q.value.trim().toLowerCase();
    const sort = form.elements.sort.value;
    for (const body of lists.querySelectorAll(".watchlist-rows")) {
      const all = [...body.querySelectorAll(".instrument")];
      all.forEach((row, i) => { if (!row.dataset.order) row.dataset.order = String(i); });
      for (const row of all) row.hidden = !!query && !row.textContent.toLowerCase().includes(query);
      const key = {
        symbol: (r) => r.dataset.symbol || "",
        change: (r) => -(parseFloat(r.dataset.change) || 0),
        order: (r) => Number(r.dataset.order),
      }[sort];
      const sorted = [...all].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
      if (sorted.some((row, i) => row !== all[i])) body.append(...sorted); // only touch the DOM when the order changes
    }
  }

  function markStale() {
    const now = Date.now();
    for (const row of lists.querySelectorAll(".instrument")) {
      const stale = now - Number(row.dataset.updated || now) > STALE_MS;
      row.classList.toggle("stale", stale);
      row.title = stale ? "No update for over two minutes" : "";
    }
  }

  function select(index) {
    const visible = rows();
    if (!visible.length) return;
    selected = Math.max(0, Math.min(visible.length - 1, index));
    visible.forEach((row, i) => row.classList.toggle("selected", i === selected));
    visible[selected].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea")) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.key === "j" || e.key === "ArrowDown") { select(selected + 1); e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { select(selected - 1); e.preventDefault(); }
    else if (e.key === "Enter" && selected >= 0) { const link = rows()[selected]?.querySelector("a.inst-symbol"); if (link) location.assign(link.href); }
    else if (e.key === "/") { form.elements.q.focus(); e.preventDefault(); }
  });
  form.addEventListener("input", apply);
  form.addEventListener("submit", (e) => e.preventDefault());
  document.addEventListener("tickerwire:snapshot", () => requestAnimationFrame(apply));
  setInterval(() => { if (form.elements.sort.value === "change") apply(); markStale(); }, 2000);
})();
