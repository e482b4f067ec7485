"use strict";
document.getElementById("test-notification").addEventListener("click", async () => {
  document.getElementById("test-result").textContent = await window.TickerwirePrefs.test();
});

// Alert destinations: everything shown comes from the server masked, and is set as text, never HTML.
(() => {
  const section = document.getElementById("destinations");
  if (!section) return;
  const csrf = () => (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
  const list = document.getElementById("destination-list");
  const form = document.getElementById("destination-form");
  const result = document.getElementById("destination-result");
  const post = async (url, body) => {
    const response = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() }, body: JSON.stringify(body || {}) });
    return { ok: response.ok, data: await response.json().catch(() => ({})) };
  };
  const say = (text) => { result.textContent = text; };
  const button = (label, onClick) => {
    const b = document.createElement("button");
    b.type = "button"; b.className = "btn"; b.textContent = label; b.addEventListener("click", onClick);
    return b;
  };
  const action = (d, what) => async () => {
    if (what === "delete" && !window.confirm(`Delete ${d.name}?`)) return;
    const { ok, data } = await post(`/api/destinations/${d.id}/${what}/`);
    if (!ok) return say(data.error || "Failed.");
    if (what === "test") say(`Test to ${d.name}: ${data.result}`);
    if (what === "rotate") say(`New secret for ${d.name} (shown once; the old one signs for 24 h): ${data.secret}`);
    if (what === "delete") say(`${d.name} deleted.`);
    load();
  };
  async function load() {
    const response = await fetch("/api/destinations/", { credentials: "same-origin" });
    if (!response.ok) return;
    const data = await response.json();
    list.replaceChildren(...data.destinations.map((d) => {
      const li = document.createElement("li");
      li.textContent = `${d.name} · ${d.kind_label} · ${d.target} · ${d.team || "personal"}`
        + (d.enabled ? "" : ` · disabled: ${d.disabled_reason}`) + " ";
      li.append(button("Test", action(d, "test")));
      if (d.kind === "webhook") li.append(button("Rotate secret", action(d, "rotate")));
      li.append(button("Delete", action(d, "delete")));
      return li;
    }));
    const team = form.elements.team;
    team.replaceChildren(new Option("Me", ""), ...data.teams.map((t) => new Option(`Team ${t.name}`, t.id)));
    form.elements.rules.replaceChildren(...data.rules.map((r) => new Option(r.label, r.id)));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const { ok, data } = await post("/api/destinations/", {
      name: f.name.value, kind: f.kind.value, target: f.target.value, team: f.team.value || null,
      knowsis_min_credibility: f.knowsis_min_credibility.value, trendspottr_min_level: f.trendspottr_min_level.value,
      rules: Array.from(f.rules.selectedOptions, (o) => Number(o.value)),
    });
    if (!ok) return say(data.error || "Could not save.");
    form.reset();
    say(data.secret ? `Saved. Signing secret (shown once, give it to the receiver): ${data.secret}` : "Saved.");
    load();
  });
  load();
})();
