// hisguard console: live page updates over server-sent events, countdowns, local times. No library.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var overdue = document.body.getAttribute("data-overdue") || "overdue";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function tick() {
    var now = Date.now();
    var els = document.querySelectorAll(".countdown[data-deadline]");
    for (var i = 0; i < els.length; i++) {
      var left = Math.round((Date.parse(els[i].getAttribute("data-deadline")) - now) / 1000);
      var a = Math.abs(left), h = Math.floor(a / 3600), m = Math.floor((a % 3600) / 60), s = a % 60;
      var text = (h ? h + ":" + pad(m) : m) + ":" + pad(s);
      els[i].textContent = left < 0 ? overdue + " " + text : text;
      els[i].classList.toggle("over", left < 0);
    }
  }

  function localTimes(root) {
    var els = root.querySelectorAll("time[data-ts]");
    for (var i = 0; i < els.length; i++) {
      var d = new Date(els[i].getAttribute("data-ts"));
      if (!isNaN(d)) {
        els[i].textContent = pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
        els[i].title = d.toString();
      }
    }
    var ticks = root.querySelectorAll("text[data-hm]");
    for (var j = 0; j < ticks.length; j++) {
      var at = new Date(ticks[j].getAttribute("data-hm"));
      if (!isNaN(at)) { ticks[j].textContent = pad(at.getHours()) + ":" + pad(at.getMinutes()); }
    }
  }

  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    // Do not replace a form someone is typing into.
    var active = document.activeElement;
    if (active && main.contains(active) && /INPUT|TEXTAREA|SELECT/.test(active.tagName) && active.value) {
      setTimeout(refresh, 3000);
      return;
    }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) {
          main.innerHTML = fresh.innerHTML;
          localTimes(main);
          tick();
          document.dispatchEvent(new CustomEvent("hisguard:updated"));
        }
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  function listen() {
    var page = main && main.getAttribute("data-live");
    if (!page || !window.EventSource) { return; }
    var dot = document.getElementById("live-dot");
    var es = new EventSource("/events?page=" + encodeURIComponent(page));
    es.addEventListener("hello", function () { if (dot) { dot.classList.add("on"); } });
    es.addEventListener("change", refresh);
    es.onerror = function () { if (dot) { dot.classList.remove("on"); } };
  }

  localTimes(document);
  tick();
  setInterval(tick, 1000);
  listen();
})();
