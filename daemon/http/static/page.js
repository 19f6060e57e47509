// flowerd's page: refresh itself, and send run / pause / resume with the http_token.
"use strict";
(function () {
  const tokenInput = document.getElementById("token");
  const flash = document.getElementById("flash");
  const KEY = "flowerd-token";
  tokenInput.value = sessionStorage.getItem(KEY) || "";
  tokenInput.addEventListener("change", () => sessionStorage.setItem(KEY, tokenInput.value));
  document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());

  function say(text, bad) {
    flash.textContent = text;
    flash.className = bad ? "bad" : "";
    flash.hidden = false;
  }

  async function act(button) {
    const { action, schedule } = button.dataset;
    const token = tokenInput.value.trim();
    if (!token) { say("Enter the daemon's http_token (top right) first.", true); tokenInput.focus(); return; }
    sessionStorage.setItem(KEY, token);
    button.disabled = true;
    try {
      const answer = await fetch(`/api/schedules/${encodeURIComponent(schedule)}/${action}`, {
        method: "POST", headers: { "Authorization": `Bearer ${token}` },
      });
      const body = await answer.json();
      if (!answer.ok) { say(`${action} ${schedule}: ${body.error}`, true); return; }
      if (action === "trigger" && body.run_id) { location.assign(`/runs/${body.run_id}`); return; }
      say(body.message || `${action}: done`, false);
      setTimeout(() => location.reload(), 600);
    } catch (err) {
      say(`${action} ${schedule}: ${err}`, true);
    } finally {
      button.disabled = false;
    }
  }
  document.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", () => act(b)));

  const every = Number(document.body.dataset.refreshS || 0);
  if (every > 0) {
    setInterval(() => {
      const busy = document.activeElement && ["INPUT", "SELECT"].includes(document.activeElement.tagName);
      if (!busy && flash.hidden) location.reload();
    }, every * 1000);
  }
})();
