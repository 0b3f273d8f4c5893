// Live pages: when /events says the cluster changed, fetch this page's content again
// (server-rendered, ?fragment=1) and swap it in. No reload, no build step.
(function () {
  "use strict";
  var main = document.getElementById("content");
  var badge = document.getElementById("live");
  if (!main || !main.dataset.fragment || !window.EventSource) return;
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(main.dataset.fragment, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { main.innerHTML = html; } })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var source = new EventSource("/events");
  source.addEventListener("hello", function (e) {
    if (e.data !== main.dataset.version) refresh();
  });
  source.addEventListener("change", function (e) {
    main.dataset.version = e.data;
    refresh();
  });
  source.onopen = function () { badge.textContent = "live"; badge.className = "live on"; };
  source.onerror = function () { badge.textContent = "reconnecting"; badge.className = "live off"; };
})();
