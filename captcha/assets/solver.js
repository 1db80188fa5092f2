// tsgate challenge page: fetch a challenge, solve it in a Web Worker, trade it for a clearance,
// then retry the original GET (or tell the user to resubmit a form). No inline script: the page
// runs under a strict Content-Security-Policy.
"use strict";

(function () {
  const root = document.getElementById("tsgate-challenge");
  if (!root) return;
  const status = document.getElementById("tsgate-status");
  const progress = document.getElementById("tsgate-progress");
  const again = document.getElementById("tsgate-start");
  let worker = null;

  function say(text) { status.textContent = text; }

  function b64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  async function run() {
    again.hidden = true;
    if (worker) worker.terminate();
    progress.removeAttribute("value");
    say("Checking your browser…");
    let challenge;
    try {
      const resp = await fetch(root.dataset.challengeUrl, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) throw new Error("challenge " + resp.status);
      challenge = await resp.json();
    } catch (err) {
      return fail("The check could not start (" + err.message + ").");
    }
    worker = new Worker(root.dataset.workerUrl);
    worker.onmessage = async (event) => {
      const m = event.data;
      if (m.progress !== undefined) { say("Working… (" + m.progress + " tries)"); return; }
      worker.terminate();
      if (m.error) return fail("This browser cannot run the check (" + m.error + ").");
      progress.value = 100;
      const payload = b64(JSON.stringify({ challenge, solution: { counter: m.counter, derivedKey: m.derivedKey,
                                                                  time: Math.round(m.time) } }));
      try {
        const resp = await fetch(root.dataset.verifyUrl, {
          method: "POST", credentials: "same-origin", cache: "no-store",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify({ altcha: payload }) });
        if (!resp.ok) {
          const problem = await resp.json().catch(() => ({}));
          return fail("The check did not pass (" + (problem.reason || resp.status) + ").");
        }
      } catch (err) {
        return fail("The check could not be sent (" + err.message + ").");
      }
      if (root.dataset.retry === "get") {
        say("Done. Loading the page…");
        window.location.reload();
      } else {
        say("Done. Go back and submit your request again.");
      }
    };
    worker.postMessage({ parameters: challenge.parameters });
  }

  function fail(text) {
    say(text);
    progress.value = 0;
    again.hidden = false;
    again.focus();
  }

  again.addEventListener("click", run);
  again.hidden = true;
  run();
})();
