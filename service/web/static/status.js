// Live progress on the status page: poll while a sync is queued or running.
(function () {
  "use strict";
  var stats = document.getElementById("stats");
  if (!stats) { return; }
  var url = stats.getAttribute("data-status-url");
  var progress = document.getElementById("progress");
  var text = document.getElementById("progress-text");
  var wasActive = !progress.hidden;

  function set(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = String(value); }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || !data.counts) { return; }
        set("count-synced", data.counts.synced || 0);
        set("count-pending", (data.counts.pending || 0) + (data.counts.deleting || 0));
        set("count-error", data.counts.error || 0);
        var active = data.run && data.run.active;
        progress.hidden = !active;
        if (active) {
          // No total yet: the run is still reading the source, so say that, not "0 / 0".
          text.textContent = data.run.total
            ? "Syncing\u2026 " + data.run.done + " / " + data.run.total
            : "Reading your event types\u2026";
        }
        if (wasActive && !active) { window.location.reload(); }
        wasActive = active;
      })
      .catch(function () { /* keep polling */ })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 1000);
})();
