// The live online count of a service page: polls our own JSON endpoint every 5 s while the page
// is shown. The page works without it (the count is rendered by the server at load time).
(function () {
  "use strict";
  var out = document.getElementById("online-count");
  if (!out || !window.fetch) { return; }
  var url = out.getAttribute("data-src");
  function tick() {
    if (document.hidden) { setTimeout(tick, 5000); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" }, cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (data) {
        if (String(data.online) !== out.textContent) { out.textContent = String(data.online); }
        setTimeout(tick, 5000);
      })
      .catch(function () { out.setAttribute("title", "Live updates stopped: reload the page"); });
  }
  setTimeout(tick, 5000);
}());
