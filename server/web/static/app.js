// hisguard console: live page updates over server-sent events, countdowns, local times, chart hover and zoom.
// No library.
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
      var svg = ticks[j].ownerSVGElement;
      if (!isNaN(at)) { ticks[j].textContent = stamp(at, svg && svg.getAttribute("data-fmt")); }
    }
  }

  // A time as the charts write it: HH:MM, MM-DD HH:MM or MM-DD (the browser's own clock).
  function stamp(d, fmt) {
    var md = pad(d.getMonth() + 1) + "-" + pad(d.getDate()), hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    return fmt === "md" ? md : (fmt === "mdhm" ? md + " " + hm : hm);
  }

  // -- charts: values under the pointer, drag to zoom, the custom range in local time ----------------
  var SVGNS = "http://www.w3.org/2000/svg";

  function nearest(times, t) {
    var lo = 0, hi = times.length - 1;
    while (hi - lo > 1) {
      var mid = (lo + hi) >> 1;
      if (times[mid] < t) { lo = mid; } else { hi = mid; }
    }
    return Math.abs(times[lo] - t) <= Math.abs(times[hi] - t) ? lo : hi;
  }

  function overlay(svg, tag, attrs) {  // a hidden SVG element drawn over the chart (cursor, zoom band)
    var el = document.createElementNS(SVGNS, tag);
    for (var name in attrs) { el.setAttribute(name, attrs[name]); }
    el.setAttribute("visibility", "hidden");
    svg.appendChild(el);
    return el;
  }

  function chart(svg) {
    var data;
    try { data = JSON.parse(svg.getAttribute("data-series")); } catch (e) { return; }
    if (!data || !data.series) { return; }
    var plot = svg.parentNode, box = plot.querySelector(".chart-tip");
    if (!box) { box = document.createElement("div"); box.className = "chart-tip"; box.hidden = true; plot.appendChild(box); }
    var plotH = String(svg.viewBox.baseVal.height - 20);
    var cursor = overlay(svg, "line", { "class": "cursor", y1: "0", y2: plotH });
    var band = overlay(svg, "rect", { "class": "zoom", y: "0", height: plotH });
    var spanS = (data.until - data.since) / 1000, start = null;

    function xOf(ev) {  // the pointer in the chart's own units (viewBox), clamped to the plot area
      var r = svg.getBoundingClientRect();
      var x = (ev.clientX - r.left) / r.width * data.width;
      return Math.min(Math.max(x, data.left), data.right);
    }
    function secondsAt(x) { return (x - data.left) / (data.right - data.left) * spanS; }

    function show(ev) {
      var x = xOf(ev), t = secondsAt(x), rows = [];
      for (var i = 0; i < data.series.length; i++) {
        var s = data.series[i];
        if (!s.t.length) { continue; }
        var k = nearest(s.t, t);
        if (Math.abs(s.t[k] - t) > Math.max(spanS / 40, 90)) { continue; }  // a gap: nothing there
        rows.push([s.c, s.n, Number(s.v[k].toPrecision(3))]);
      }
      cursor.setAttribute("x1", String(x));
      cursor.setAttribute("x2", String(x));
      cursor.setAttribute("visibility", "visible");
      box.textContent = "";
      var head = document.createElement("div");
      head.className = "tip-time";
      head.textContent = stamp(new Date(data.since + t * 1000), "mdhm");
      box.appendChild(head);
      for (var j = 0; j < rows.length; j++) {
        var line = document.createElement("div"), sw = document.createElement("span");
        sw.className = "tip-swatch";
        sw.style.background = rows[j][0];
        line.appendChild(sw);
        line.appendChild(document.createTextNode(rows[j][1] + ": " + rows[j][2] + (data.unit === "%" ? "%" : " " + data.unit)));
        line.className = "tip-row";
        box.appendChild(line);
      }
      box.hidden = false;
      var r = svg.getBoundingClientRect(), px = (x / data.width) * r.width;
      box.style.left = Math.max(0, Math.min(px + 12, r.width - box.offsetWidth)) + "px";
      if (start !== null) {
        band.setAttribute("x", String(Math.min(start, x)));
        band.setAttribute("width", String(Math.abs(x - start)));
        band.setAttribute("visibility", "visible");
      }
    }
    function hide() {
      cursor.setAttribute("visibility", "hidden");
      box.hidden = true;
    }
    svg.addEventListener("pointermove", show);
    svg.addEventListener("pointerleave", function (ev) {
      if (ev.pointerType === "touch") { return; }  // a finger lifted: the values stay until the next tap
      hide();
      start = null;
      band.setAttribute("visibility", "hidden");
    });
    svg.addEventListener("pointerdown", function (ev) {
      if (ev.pointerType === "touch") { show(ev); return; }  // a tap shows the values; dragging scrolls the page
      start = xOf(ev);
      ev.preventDefault();
    });
    svg.addEventListener("pointerup", function (ev) {
      if (start === null) { return; }
      var end = xOf(ev), a = Math.min(start, end), b = Math.max(start, end);
      start = null;
      band.setAttribute("visibility", "hidden");
      if (b - a < 6) { return; }  // a click, not a drag
      var from = new Date(data.since + secondsAt(a) * 1000), to = new Date(data.since + secondsAt(b) * 1000);
      var q = new URLSearchParams(location.search);
      q.delete("range");
      q.set("from", from.toISOString());
      q.set("to", to.toISOString());
      location.search = q.toString();
    });
  }

  function localInput(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function charts(root) {
    var svgs = root.querySelectorAll("svg[data-series]");
    for (var i = 0; i < svgs.length; i++) { chart(svgs[i]); }
    var form = root.querySelector("#range-form");
    if (form && !form.getAttribute("data-ready")) {
      form.setAttribute("data-ready", "1");
      var since = form.getAttribute("data-since"), until = form.getAttribute("data-until");
      if (since && !form.elements.from.value) { form.elements.from.value = localInput(new Date(since)); }
      if (until && !form.elements.to.value) { form.elements.to.value = localInput(new Date(until)); }
      form.addEventListener("submit", function () { form.elements.tz.value = String(new Date().getTimezoneOffset()); });
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
  charts(document);
  document.addEventListener("hisguard:updated", function () { charts(main); });
  tick();
  setInterval(tick, 1000);
  listen();
})();
