/*
 * Watchlist editing on the board, for the team's owners and editors only (viewers get no
 * controls, and the server refuses them anyway). Search by symbol or name, add, remove; the
 * server tells every teammate's open board to resync, this one included.
 */
"use strict";
window.TickerwireEdit = (() => {
  const canEdit = (wl) => wl.role === "owner" || wl.role === "editor";
  const csrf = () => (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";

  async function call(method, url, body) {
    const res = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || "HTTP " + res.status);
  }

  function decorateRow(row, wl, inst) {
    if (!canEdit(wl)) return;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-instrument";
    remove.textContent = "×";
    remove.setAttribute("aria-label", "Remove " + inst.symbol + " from " + wl.name);
    remove.setAttribute("title", "Remove from this watchlist");
    remove.addEventListener("click", () => call("DELETE", `/api/watchlists/${wl.id}/items/${inst.id}/`)
      .catch((err) => alert("Could not remove: " + err.message)));
    row.append(remove);
  }

  function decorateSection(section, wl) {
    if (!canEdit(wl)) return;
    const form = document.createElement("form");
    form.className = "add-instrument";
    const input = document.createElement("input");
    input.name = "q";
    input.placeholder = "Add an instrument: symbol or name";
    input.setAttribute("aria-label", "Add an instrument to " + wl.name);
    input.setAttribute("autocomplete", "off");
    const list = document.createElement("datalist");
    list.id = "instrument-options-" + wl.id;
    input.setAttribute("list", list.id);
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Add";
    const matches = new Map(); // "SYM — Name" -> id
    input.addEventListener("input", async () => {
      const res = await fetch("/api/instruments/?q=" + encodeURIComponent(input.value), { credentials: "same-origin" });
      if (!res.ok) return;
      matches.clear();
      list.replaceChildren(...(await res.json()).instruments.map((i) => {
        const label = i.symbol + " — " + i.name;
        matches.set(label, i.id);
        matches.set(i.symbol.toUpperCase(), i.id);
        const option = document.createElement("option");
        option.value = label;
        return option;
      }));
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const id = matches.get(input.value) || matches.get(input.value.trim().toUpperCase());
      if (!id) { input.setCustomValidity("Pick an instrument from the list"); input.reportValidity(); return; }
      input.setCustomValidity("");
      call("POST", `/api/watchlists/${wl.id}/items/`, { instrument_id: id })
        .then(() => { input.value = ""; })
        .catch((err) => alert("Could not add: " + err.message));
    });
    form.append(input, list, button);
    section.append(form);
  }

  return { decorateRow, decorateSection };
})();
