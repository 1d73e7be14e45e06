// wharf web UI enhancements. Every page works without this file; it only adds copy
// buttons, confirmation dialogs and the live tail of a job's log.
"use strict";

// Copy buttons: <button class="copy" data-copy="INPUT-ID" hidden>.
function setUpCopyButtons() {
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    const input = document.getElementById(button.dataset.copy);
    if (!input) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      let copied = false;
      try {
        await navigator.clipboard.writeText(input.value);
        copied = true;
      } catch (_) {
        // No clipboard access (plain http to another host): select the text instead.
        input.select();
      }
      button.textContent = copied ? "Copied" : "Press Ctrl+C";
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }
}

// Forms with data-confirm ask first, in a <dialog> that works with the keyboard.
function setUpConfirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (form.dataset.confirmed === "yes") return;
      event.preventDefault();
      const dialog = document.createElement("dialog");
      const text = document.createElement("p");
      text.textContent = form.dataset.confirm;
      const yes = document.createElement("button");
      yes.textContent = "Yes";
      yes.className = "danger";
      const no = document.createElement("button");
      no.textContent = "Cancel";
      no.className = "link";
      dialog.append(text, yes, document.createTextNode(" "), no);
      document.body.append(dialog);
      no.addEventListener("click", () => { dialog.close(); dialog.remove(); });
      yes.addEventListener("click", () => {
        form.dataset.confirmed = "yes";
        dialog.close();
        dialog.remove();
        form.requestSubmit();
      });
      dialog.showModal();
      no.focus();
    });
  }
}

// A running job's log: ask for new lines every second until the job finishes.
function setUpLogTail() {
  const log = document.getElementById("job-log");
  if (!log || log.hasAttribute("data-finished")) return;
  const body = log.querySelector("tbody");
  const state = document.getElementById("tail-state");
  let after = Number(log.dataset.after || "0");
  let failures = 0;
  state.textContent = "Following the log…";
  async function poll() {
    try {
      const response = await fetch(log.dataset.tail + "?after=" + after, { credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      failures = 0;
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      for (const line of data.lines) {
        const row = document.createElement("tr");
        row.dataset.seq = line.seq;
        for (const [text, cls] of [[line.at, ""], [String(line.attempt), "num"], [line.line, "wrap"]]) {
          const cell = document.createElement("td");
          cell.textContent = text; // never HTML: log lines are data
          if (cls) cell.className = cls;
          row.append(cell);
        }
        body.append(row);
        after = line.seq;
      }
      if (atBottom) log.scrollTop = log.scrollHeight;
      const status = document.getElementById("job-status");
      status.textContent = data.status;
      status.className = "status s-" + data.status;
      document.getElementById("job-attempts").textContent = data.attempts;
      document.getElementById("job-progress").textContent = data.progress || "";
      if (data.finished && data.lines.length === 0) {
        state.textContent = "The job has finished.";
        log.setAttribute("data-finished", "");
        return;
      }
    } catch (error) {
      failures += 1;
      state.textContent = "Could not reach the registry (" + error.message + "); retrying.";
      if (failures > 30) { state.textContent = "Stopped following: the registry does not answer. Reload to try again."; return; }
    }
    setTimeout(poll, data_delay());
  }
  function data_delay() { return 1000; }
  setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpCopyButtons();
  setUpConfirmations();
  setUpLogTail();
});
