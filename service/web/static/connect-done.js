// The last page of a connect flow opened by the widget (connect.js) in a popup: tell the
// opener the outcome, only at the origin the connect page checked against
// RETURN_URL_ALLOWED_ORIGINS, then close the popup. Without an opener (the link was opened
// in a tab, or the opener navigated away) the page simply stays.
(function () {
  "use strict";
  var el = document.getElementById("linksync-widget");
  if (!el || !window.opener) { return; }
  var origin = el.getAttribute("data-origin");
  if (!origin) { return; }
  var message = {
    source: "linksync",
    status: el.getAttribute("data-status"),
    account_id: el.getAttribute("data-account-id") || null
  };
  var member = el.getAttribute("data-member-id");
  if (member) { message.member_id = member; }
  try {
    window.opener.postMessage(message, origin);
  } catch (e) {
    return; // the opener is gone or elsewhere: leave this page open for the admin to read
  }
  window.close();
})();
