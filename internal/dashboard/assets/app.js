// Live updates for the dashboard (ours; no third-party code). The server
// sends a "something changed" message over server-sent events for every
// event of the events stream and every queue sample; this script re-fetches
// the page's live part at most once a second and swaps it in. A job page
// refreshes only for its own job's events; the dead-letter page only for
// job events, so a button is not replaced while the queue is idle.
(function () {
  "use strict";
  var body = document.body;
  var mode = body.dataset.live;
  if (!mode || !window.EventSource) return;
  var status = document.getElementById("live-status");
  var pending = false, busy = false, last = 0;
  var minGap = 1000;

  function refresh() {
    if (busy) { pending = true; return; }
    var wait = last + minGap - Date.now();
    if (wait > 0) {
      if (!pending) { pending = true; setTimeout(function () { pending = false; refresh(); }, wait); }
      return;
    }
    busy = true;
    last = Date.now();
    fetch(location.pathname + location.search, { headers: { "X-Dashboard-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        document.getElementById("live").innerHTML = html;
        body.dataset.refreshes = String(Number(body.dataset.refreshes || 0) + 1);
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (pending) { pending = false; refresh(); }
      });
  }

  function wanted(m) {
    if (mode === "job") return m.kind === "event" && m.job === body.dataset.job;
    if (mode === "events") return m.kind === "event";
    return true;
  }

  var es = new EventSource(body.dataset.base + "/events");
  es.onopen = function () { status.textContent = "● live"; status.classList.add("on"); };
  es.onerror = function () { status.textContent = "○ reconnecting"; status.classList.remove("on"); };
  es.onmessage = function (e) {
    var m;
    try { m = JSON.parse(e.data); } catch (err) { return; }
    if (wanted(m)) refresh();
  };
})();
