// The saga console: confirmations, and live regions fetched again every few seconds.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// Periodic fetch, not server-sent events: each region is the same server-rendered
// HTML as the page, fetched again; no connection is held open per tab.
const REFRESH_MS = 2000;

async function refresh(region) {
  const source = region.getAttribute("data-live");
  try {
    const answer = await fetch(source, { credentials: "same-origin" });
    if (answer.status === 401) {
      window.location.assign("/sign-in");
      return;
    }
    if (answer.ok) {
      const html = await answer.text();
      if (html !== region.innerHTML) {
        region.innerHTML = html;
      }
    }
  } catch (error) {
    // The console is restarting or the network is down: try again at the next tick.
  }
}

function tick() {
  if (document.visibilityState === "visible") {
    document.querySelectorAll("[data-live]").forEach((region) => {
      if (!region.contains(document.activeElement)) {
        refresh(region);
      }
    });
  }
}

setInterval(tick, REFRESH_MS);
