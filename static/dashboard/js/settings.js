"use strict";
document.getElementById("test-notification").addEventListener("click", async () => {
  document.getElementById("test-result").textContent = await window.TickerwirePrefs.test();
});
