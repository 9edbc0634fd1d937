// Operator console: live updates (the CSP allows only same-origin scripts, no inline code).
// Dashboard: counts and running syncs from /admin/api/activity.json every 2 s.
// Connection page: follows its queued/running runs and reloads when they have finished.
(function () {
  "use strict";
  var INTERVAL = 2000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function badge(status) {
    return el("span", "badge badge-" + status, status.replace(/_/g, " "));
  }

  function progress(done, total) {
    var wrap = el("span", "progress");
    var bar = document.createElement("progress");
    bar.max = total || 1;
    bar.value = done;
    wrap.appendChild(bar);
    wrap.appendChild(el("span", "progress-text", done + " / " + total));
    return wrap;
  }

  // The console's one time format, as the server writes it: "YYYY-MM-DD HH:MM:SS UTC".
  function utc(value) {
    var date = value instanceof Date ? value : new Date(value);
    if (isNaN(date.getTime())) { return ""; }
    return date.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { throw new Error("signed-out"); }
        if (!response.ok) { throw new Error("http " + response.status); }
        return response.json();
      });
  }

  // Dashboard ------------------------------------------------------------------------

  function startDashboard(live) {
    var url = live.getAttribute("data-url");
    var connectionUrl = live.getAttribute("data-connection-url").replace(/0$/, "");
    var liveText = document.getElementById("live-text");
    var body = document.getElementById("running-runs");

    function renderRunning(runs) {
      body.textContent = "";
      document.getElementById("running-count").textContent = runs.length;
      if (!runs.length) {
        var empty = el("tr", "empty");
        var td = el("td", "", "No sync is running.");
        td.colSpan = 6;
        empty.appendChild(td);
        body.appendChild(empty);
        return;
      }
      runs.forEach(function (run) {
        var tr = document.createElement("tr");
        tr.appendChild(el("td", "mono", "#" + run.id));
        var account = el("td");
        var link = el("a", "mono", run.account_id);
        link.href = connectionUrl + run.connection_id;
        account.appendChild(link);
        tr.appendChild(account);
        tr.appendChild(el("td", "", run.trigger));
        var status = el("td");
        status.appendChild(badge(run.status));
        tr.appendChild(status);
        tr.appendChild(el("td", "nowrap", run.started_at ? utc(run.started_at) : ""));
        var cell = el("td");
        cell.appendChild(progress(run.done, run.total));
        tr.appendChild(cell);
        body.appendChild(tr);
      });
    }

    function apply(data) {
      var nodes = document.querySelectorAll("[data-stat]");
      Array.prototype.forEach.call(nodes, function (node) {
        var path = node.getAttribute("data-stat").split(".");
        var group = data[path[0]] || {};
        var value = group[path[1]] || 0;
        node.textContent = value;
        node.classList.toggle("zero", value === 0);
      });
      renderRunning(data.running);
      document.getElementById("queue-text").textContent =
        data.queued.count ? data.queued.count + " queued" : "Queue empty";
      live.classList.remove("stale");
      liveText.textContent = "Live · updated " + utc(new Date());
    }

    function poll() {
      getJSON(url)
        .then(function (data) { apply(data); window.setTimeout(poll, INTERVAL); })
        .catch(function (error) {
          live.classList.add("stale");
          if (error.message === "signed-out") {
            liveText.textContent = "Signed out: reload the page to sign in again";
            return;
          }
          liveText.textContent = "Connection lost, retrying…";
          window.setTimeout(poll, INTERVAL);
        });
    }
    poll();
  }

  // Connection page --------------------------------------------------------------------

  function startRunFollower(table) {
    var rows = table.querySelectorAll("tr[data-active-run]");
    if (!rows.length) { return; }
    var byId = {};
    Array.prototype.forEach.call(rows, function (row) {
      byId[row.getAttribute("data-active-run")] = row;
    });
    var url = table.getAttribute("data-url") + "?ids=" + Object.keys(byId).join(",");

    function poll() {
      getJSON(url)
        .then(function (data) {
          var finished = false;
          data.runs.forEach(function (run) {
            var row = byId[String(run.id)];
            if (!row) { return; }
            if (run.status !== "queued" && run.status !== "running") { finished = true; return; }
            var status = row.querySelector("[data-field=status]");
            status.textContent = "";
            status.appendChild(badge(run.status));
            var detail = row.querySelector("[data-field=detail]");
            detail.textContent = "";
            if (run.status === "running") { detail.appendChild(progress(run.done, run.total)); }
          });
          if (finished) { window.location.reload(); return; }
          window.setTimeout(poll, INTERVAL);
        })
        .catch(function (error) {
          if (error.message !== "signed-out") { window.setTimeout(poll, INTERVAL * 2); }
        });
    }
    window.setTimeout(poll, INTERVAL);
  }

  var live = document.getElementById("live");
  if (live) { startDashboard(live); }
  var runs = document.getElementById("runs");
  if (runs) { startRunFollower(runs); }
})();
