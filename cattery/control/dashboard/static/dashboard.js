// The session page's live log tail: server-sent events appended to the log, kept scrolled
// to the bottom unless the reader scrolled up.
(() => {
  const log = document.getElementById("log");
  if (!log || !log.dataset.stream || !window.EventSource) return;
  const state = document.getElementById("log-state");
  const source = new EventSource(log.dataset.stream);
  log.scrollTop = log.scrollHeight;
  source.onmessage = (event) => {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    const line = document.createElement("span");
    line.className = "line new";
    line.textContent = JSON.parse(event.data).line;
    log.append(line, "\n");
    if (atBottom) log.scrollTop = log.scrollHeight;
  };
  source.addEventListener("end", (event) => {
    const ended = JSON.parse(event.data).endState;
    const words = ended ? ended.replace(/_/g, " ") : "ended";
    if (state) state.textContent = ended ? `ended: ${words}` : "ended";
    const badge = document.querySelector("#session-state .badge");
    if (badge) {
      badge.className = `badge ${ended || ""}`;
      badge.textContent = words;
    }
    const step = document.querySelector('[data-step="ended"]');
    if (step) {
      step.className = "done";
      step.querySelector(".note").textContent = words;
    }
    for (const stop of document.querySelectorAll("form[action$='/stop']")) stop.remove();
    source.close();
  });
})();
