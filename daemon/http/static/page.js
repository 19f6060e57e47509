// flowerd's page: refresh itself, and send run / pause / resume with the http_token.
"use strict";
(function () {
  const flash = document.getElementById("flash");
  const every = Number(document.body.dataset.refreshS || 0);
  const SHOWN_MS = Math.max(8000, every * 1000);  // a message stays one refresh, then goes
  let hide = null;

  function say(text, bad) {
    flash.textContent = text;
    flash.className = bad ? "bad" : "";
    flash.hidden = false;
    clearTimeout(hide);
    hide = setTimeout(() => { flash.hidden = true; }, SHOWN_MS);
  }

  if (every > 0) {  // keeps refreshing, after an error too (once its message was seen)
    setInterval(() => {
      const busy = document.activeElement && ["INPUT", "SELECT"].includes(document.activeElement.tagName);
      if (!busy && flash.hidden) location.reload();
    }, every * 1000);
  }

  const liveLog = document.getElementById("live-log");
  if (liveLog && window.EventSource) {  // a running run's log: new lines as they come (livelog.py)
    const source = new EventSource(liveLog.dataset.events);
    source.onmessage = (e) => {
      const atBottom = liveLog.scrollTop + liveLog.clientHeight >= liveLog.scrollHeight - 4;
      liveLog.append(JSON.parse(e.data).text + "\n");
      if (atBottom) liveLog.scrollTop = liveLog.scrollHeight;
    };
    source.addEventListener("end", () => { source.close(); setTimeout(() => location.reload(), 500); });
  }

  const tokenInput = document.getElementById("token");
  if (!tokenInput) return;  // no http_token: the page is read-only and says how to set one
  const KEY = "flowerd-token";
  tokenInput.value = sessionStorage.getItem(KEY) || "";
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem(KEY, tokenInput.value);
    // with http_read_auth the page's GETs need a token too: the cookie carries it
    document.cookie = `flowerd_token=${encodeURIComponent(tokenInput.value.trim())}; path=/; SameSite=Strict`;
  });
  document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());

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
})();
