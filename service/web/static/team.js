// The team table on the status page: "Get link" fetches a member's personal connect link
// (a CSRF-protected POST; without JavaScript the form posts and the page shows the link),
// "Copy" puts it on the clipboard, and the rows follow status.json while the page is open.
(function () {
  "use strict";
  var team = document.getElementById("team");
  if (!team) { return; }

  function showLink(row, url) {
    var form = row.querySelector("form.get-link");
    var box = row.querySelector(".link-box");
    if (!box) { return; }
    box.querySelector(".link-url").value = url;
    box.hidden = false;
    if (form) { form.hidden = true; }
  }

  team.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("get-link")) { return; }
    event.preventDefault();
    var button = form.querySelector("button");
    button.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    })
      .then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      })
      .then(function (answer) {
        if (!answer.ok) {
          var message = answer.body && answer.body.error ? answer.body.error.message : "Could not get the link.";
          button.disabled = false;
          button.textContent = "Try again";
          button.title = message;
          return;
        }
        showLink(form.closest("tr"), answer.body.url);
      })
      .catch(function () { form.submit(); });
  });

  team.addEventListener("click", function (event) {
    var button = event.target;
    if (!button.hasAttribute || !button.hasAttribute("data-copy")) { return; }
    var input = button.parentNode.querySelector(".link-url");
    function copied() {
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(copied, function () {
        input.select();
        document.execCommand("copy");
        copied();
      });
    } else {
      input.select();
      document.execCommand("copy");
      copied();
    }
  });

  var labels = { active: "Connected", needs_reauth: "Needs reconnect", paused: "Paused", disconnected: "Disconnected" };

  function setText(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = String(value); }
  }

  function badge(text, status) {
    var span = document.createElement("span");
    span.className = "badge badge-" + status;
    span.textContent = text;
    return span;
  }

  function update(data) {
    if (!data || !data.team) { return; }
    var t = data.team.totals;
    setText("team-covered", t.covered);
    setText("team-total", t.total);
    setText("team-connected", t.connected);
    setText("team-mapped", t.mapped_only);
    setText("team-unmatched", t.unmatched);
    data.team.members.forEach(function (m) {
      var row = team.querySelector('tr[data-member="' + CSS.escape(m.member_id) + '"]');
      if (!row) { return; }
      var conn = row.querySelector('[data-field="connection"]');
      conn.textContent = "";
      if (m.via === "admin") {
        conn.appendChild(badge("You (admin)", "active"));
      } else if (m.connection) {
        conn.appendChild(badge(labels[m.connection] || m.connection, m.connection));
      } else {
        var none = document.createElement("span");
        none.className = "muted";
        none.textContent = "Not connected";
        conn.appendChild(none);
      }
      row.querySelector('[data-field="links"]').textContent = String(m.links);
      var status = row.querySelector('[data-field="status"]');
      status.textContent = "";
      var state = document.createElement("span");
      state.className = "state " + (m.covered ? "state-synced" : "state-pending");
      state.textContent = m.covered ? "covered" : "not covered";
      status.appendChild(state);
      if (m.reason) {
        var reason = document.createElement("div");
        reason.className = "muted small";
        reason.setAttribute("data-field", "reason");
        reason.textContent = m.reason;
        status.appendChild(reason);
      }
      row.setAttribute("data-connection", m.connection || "none");
    });
  }

  var url = team.getAttribute("data-status-url");
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(update)
      .catch(function () { /* keep polling */ })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  if (url) { window.setTimeout(poll, 1500); }
})();
