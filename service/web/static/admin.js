// Live activity on the operator dashboard: counts and running syncs, refreshed every 2 s.
(function () {
  "use strict";
  var tiles = document.getElementById("tiles");
  if (!tiles) { return; }
  var url = tiles.getAttribute("data-activity-url");
  var body = document.getElementById("active-runs");

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function render(active) {
    body.textContent = "";
    if (!active.length) {
      var empty = document.createElement("tr");
      empty.className = "empty";
      var td = cell(empty, "No sync is running.");
      td.colSpan = 5;
      body.appendChild(empty);
      return;
    }
    active.forEach(function (run) {
      var tr = document.createElement("tr");
      cell(tr, "#" + run.id);
      var account = cell(tr, "");
      var link = document.createElement("a");
      link.href = "/admin/connections/" + run.connection_id;
      link.textContent = run.account_id;
      account.appendChild(link);
      cell(tr, run.trigger);
      var status = cell(tr, "");
      var badge = document.createElement("span");
      badge.className = "badge b-" + run.status;
      badge.textContent = run.status;
      status.appendChild(badge);
      var progress = cell(tr, "");
      var bar = document.createElement("progress");
      bar.max = run.total || 1;
      bar.value = run.done;
      progress.appendChild(bar);
      progress.appendChild(document.createTextNode(" " + run.done + " / " + run.total));
      body.appendChild(tr);
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        Object.keys(data.connections).forEach(function (k) {
          var el = document.getElementById("conn-" + k);
          if (el) { el.textContent = data.connections[k]; }
        });
        Object.keys(data.links).forEach(function (k) {
          var el = document.getElementById("links-" + k);
          if (el) { el.textContent = data.links[k]; }
        });
        document.getElementById("active-count").textContent = "(" + data.active.length + ")";
        render(data.active);
      })
      .catch(function () { /* keep polling */ })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 2000);
})();
