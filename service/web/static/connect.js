/*! LinkSync connect widget. No dependencies.
 *
 *   <script src="https://linksync.example.com/static/connect.js"></script>
 *   LinkSync.connect({ url: connectUrl }).then(function (result) {
 *     // result.status: "connected" | "declined" | "error" | "closed"
 *     // result.account_id (null when "closed"), result.member_id (member connections only)
 *   });
 *
 * `url` is the connect_url from POST /api/v1/connect-sessions. The connect page opens in a
 * popup; its last page posts the outcome to this page's origin, which must be listed in
 * RETURN_URL_ALLOWED_ORIGINS. "closed": the admin closed the popup before finishing.
 * Where the browser blocks the popup, this page navigates to the connect URL instead (the
 * full-page flow; the connect session's return_url brings the admin back) and the promise
 * never settles. Call connect() from a click handler so the popup is not blocked.
 */
(function (root) {
  "use strict";
  var POLL_MS = 250;
  var CLOSED_GRACE_MS = 300; // a message posted just before the popup closed still wins

  function connect(options) {
    if (!options || typeof options.url !== "string" || !options.url) {
      return Promise.reject(new TypeError("LinkSync.connect: options.url is required"));
    }
    var target = new URL(options.url, root.location.href);
    var linksyncOrigin = target.origin;
    target.searchParams.set("widget_origin", root.location.origin);
    var width = options.width || 520;
    var height = options.height || 720;
    var left = Math.max(0, (root.screenX || 0) + ((root.outerWidth || width) - width) / 2);
    var top = Math.max(0, (root.screenY || 0) + ((root.outerHeight || height) - height) / 2);
    var features = "popup,width=" + width + ",height=" + height + ",left=" + left + ",top=" + top;
    var popup = root.open(target.toString(), "linksync_connect", features);
    if (!popup) {
      root.location.assign(options.url); // blocked: the full-page flow
      return new Promise(function () {});
    }
    if (popup.focus) { popup.focus(); }
    return new Promise(function (resolve) {
      var done = false;
      var timer = null;

      function finish(result) {
        if (done) { return; }
        done = true;
        root.removeEventListener("message", onMessage);
        if (timer !== null) { root.clearInterval(timer); }
        resolve(result);
      }

      function onMessage(event) {
        var data = event.data;
        if (event.origin !== linksyncOrigin || event.source !== popup) { return; }
        if (!data || data.source !== "linksync" || typeof data.status !== "string") { return; }
        var result = { status: data.status, account_id: data.account_id || null };
        if (data.member_id) { result.member_id = data.member_id; }
        finish(result);
      }

      root.addEventListener("message", onMessage);
      timer = root.setInterval(function () {
        if (popup.closed) {
          root.clearInterval(timer);
          timer = null;
          root.setTimeout(function () {
            finish({ status: "closed", account_id: null });
          }, CLOSED_GRACE_MS);
        }
      }, POLL_MS);
    });
  }

  root.LinkSync = root.LinkSync || {};
  root.LinkSync.connect = connect;
})(window);
