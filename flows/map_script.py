"""The script and style sheet inlined into every HTML map (:mod:`flows.map_html`); vanilla JS, no library.

The script reads the map's JSON (``<script id="map-data">``, see :func:`flows.map_html.map_data`),
draws one SVG ``path.lake`` per lake and ``path.aoi`` per AOI outline, pans (drag) and zooms
(wheel, ``+`` / ``-`` buttons) by changing the SVG ``viewBox``, keeps a scale bar in km, and on a
click on a lake shows a popup with every attribute and the lake's area series as a small chart
(``svg.series``: one ``circle.obs`` per observation, hollow when the lake was seen dry). When done
it sets ``data-lakes-drawn`` on ``<html>``. Text from the data goes in through ``textContent``
only (never as markup).
"""

from __future__ import annotations

__all__ = ["SCRIPT", "STYLE"]

STYLE = """
html, body { margin: 0; height: 100%; font: 13px/1.35 system-ui, sans-serif; color: #222; }
#map { position: absolute; inset: 0; width: 100%; height: 100%; background: #fbfbf8; cursor: grab; }
#map .aoi { fill: none; stroke: #000; stroke-width: 1.2px; vector-effect: non-scaling-stroke; }
#map .lake { stroke: #222; stroke-width: 0.6px; vector-effect: non-scaling-stroke; fill-rule: evenodd; }
#map .lake:hover, #map .lake.selected { stroke: #000; stroke-width: 2px; }
.box { position: absolute; background: rgba(255,255,255,.94); border: 1px solid #999; border-radius: 4px;
  padding: 6px 8px; box-shadow: 0 1px 4px rgba(0,0,0,.2); }
#title { top: 8px; left: 8px; font-weight: 600; }
#legend { bottom: 8px; left: 8px; }
#legend h3 { margin: 0 0 4px; font-size: 12px; }
#legend .swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #333; margin-right: 6px;
  vertical-align: -2px; }
#scale { bottom: 8px; right: 8px; text-align: center; }
#scale .bar { height: 6px; background: #000; margin: 0 auto 2px; }
#zoom { top: 8px; right: 8px; padding: 2px; }
#zoom button { display: block; width: 28px; height: 28px; font-size: 16px; margin: 2px; }
#popup { display: none; top: 48px; right: 48px; max-width: 320px; max-height: 80%; overflow: auto; }
#popup table { border-collapse: collapse; margin-bottom: 6px; }
#popup td { padding: 1px 6px 1px 0; vertical-align: top; }
#popup td.k { color: #555; }
#popup .close { float: right; border: none; background: none; font-size: 16px; cursor: pointer; }
.series .obs { fill: #1f77b4; } .series .obs.dry { fill: #fff; stroke: #d62728; }
.series .line { fill: none; stroke: #1f77b4; } .series .axis { fill: none; stroke: #555; }
.series text { font-size: 10px; fill: #333; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var MAX_ZOOM = 64;
  var data = JSON.parse(document.getElementById("map-data").textContent);
  var svg = document.getElementById("map");
  var view = document.createElementNS(NS, "g");
  svg.appendChild(view);

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function html(name, text, parent) {
    var e = document.createElement(name);
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  // A ring is [x0, y0, dx1, dy1, ...]: whole metres east / north of data.origin, then steps.
  function ringPath(ring) {
    var x = 0, y = 0, out = [];
    for (var i = 0; i + 1 < ring.length; i += 2) {
      x += ring[i]; y += ring[i + 1];
      out.push((i === 0 ? "M" : "L") + x + " " + (-y));
    }
    return out.join("") + "Z";
  }
  function pathOf(rings) { return rings.map(ringPath).join(""); }
  function fmt(v) {
    if (v === null || v === undefined) { return "–"; }
    if (typeof v === "number") {
      if (Number.isInteger(v)) { return String(v); }
      var s = v.toPrecision(6);
      return s.indexOf("e") < 0 && s.indexOf(".") >= 0 ? s.replace(/\.?0+$/, "") : s;
    }
    return String(v);
  }

  data.aois.forEach(function (a) {
    var p = el("path", {"class": "aoi", d: pathOf(a.rings)}, view);
    el("title", {}, p).textContent = a.name;
  });
  var colours = {}, byId = {};
  data.legend.entries.forEach(function (e) { colours[e.key] = e.colour; });
  data.lakes.forEach(function (lake) {
    el("path", {"class": "lake", d: pathOf(lake.rings), fill: colours[lake.cls], "data-lake-id": String(lake.id)},
       view);
    byId[lake.id] = lake;
  });

  // Legend.
  var legend = document.getElementById("legend");
  html("h3", data.legend.title, legend);
  data.legend.entries.forEach(function (e) {
    var row = html("div", undefined, legend);
    html("span", undefined, row).className = "swatch";
    row.lastChild.style.background = e.colour;
    html("span", e.label + " (" + e.count + ")", row);
  });
  document.getElementById("title").textContent = data.title;

  // Pan and zoom: the viewBox, kept at the window's aspect ratio (so one unit is one metre both ways).
  var ext = data.extent, vb = {x: 0, y: 0, w: 1, h: 1}, full = 1;
  function fit() {
    var cw = svg.clientWidth || 800, ch = svg.clientHeight || 600;
    var w = Math.max(ext[2] - ext[0], 1) * 1.08, h = Math.max(ext[3] - ext[1], 1) * 1.08;
    if (w / h < cw / ch) { w = h * cw / ch; } else { h = w * ch / cw; }
    vb = {x: (ext[0] + ext[2]) / 2 - w / 2, y: -(ext[1] + ext[3]) / 2 - h / 2, w: w, h: h};
    full = w;
    apply();
  }
  function apply() {
    svg.setAttribute("viewBox", [vb.x, vb.y, vb.w, vb.h].join(" "));
    scaleBar();
  }
  function zoomAt(factor, px, py) {
    var cw = svg.clientWidth, ch = svg.clientHeight;
    var w = Math.min(Math.max(vb.w / factor, full / MAX_ZOOM), full * 2), k = w / vb.w;
    var ux = vb.x + px / cw * vb.w, uy = vb.y + py / ch * vb.h;
    vb = {x: ux - (ux - vb.x) * k, y: uy - (uy - vb.y) * k, w: w, h: vb.h * k};
    apply();
  }
  function scaleBar() {
    var perPx = vb.w / (svg.clientWidth || 800), target = perPx * 120;
    var p = Math.pow(10, Math.floor(Math.log10(target))), len = p;
    [1, 2, 5].forEach(function (m) { if (m * p <= target) { len = m * p; } });
    var box = document.getElementById("scale");
    box.firstChild.style.width = (len / perPx).toFixed(0) + "px";
    box.lastChild.textContent = +(len / 1000).toPrecision(3) + " km";
  }
  svg.addEventListener("wheel", function (e) {
    e.preventDefault();
    var r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});
  var drag = null;
  svg.addEventListener("pointerdown", function (e) { drag = {x: e.clientX, y: e.clientY, vb: vb, moved: 0}; });
  svg.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y, k = drag.vb.w / svg.clientWidth;
    drag.moved = Math.max(drag.moved, Math.abs(dx) + Math.abs(dy));
    if (drag.moved > 3) {
      vb = {x: drag.vb.x - dx * k, y: drag.vb.y - dy * k, w: drag.vb.w, h: drag.vb.h};
      apply();
    }
  });
  window.addEventListener("pointerup", function () { setTimeout(function () { drag = null; }, 0); });
  document.getElementById("zoom-in").addEventListener("click", function () {
    zoomAt(2, svg.clientWidth / 2, svg.clientHeight / 2);
  });
  document.getElementById("zoom-out").addEventListener("click", function () {
    zoomAt(0.5, svg.clientWidth / 2, svg.clientHeight / 2);
  });
  window.addEventListener("resize", fit);

  // Popup: every attribute of the export row, then the area series.
  var popup = document.getElementById("popup"), selected = null;
  function chart(series, parent) {
    if (!series.length) { html("div", "no observations", parent); return; }
    var W = 290, H = 130, L = 58, R = 8, T = 8, B = 24;
    var s = el("svg", {"class": "series", width: W, height: H, viewBox: "0 0 " + W + " " + H}, parent);
    var ts = series.map(function (p) { return Date.parse(p[0]); });
    var as = series.map(function (p) { return p[1] && p[2] !== null ? p[2] : 0; });
    var t0 = Math.min.apply(null, ts), t1 = Math.max.apply(null, ts);
    if (t1 === t0) { t0 -= 864e5; t1 += 864e5; }
    var a1 = Math.max.apply(null, as) * 1.1 || 1;
    function x(t) { return L + (t - t0) / (t1 - t0) * (W - L - R); }
    function y(a) { return T + (1 - a / a1) * (H - T - B); }
    el("path", {"class": "axis", d: "M" + L + " " + T + "V" + (H - B) + "H" + (W - R)}, s);
    el("polyline", {"class": "line", points: ts.map(function (t, i) { return x(t) + "," + y(as[i]); }).join(" ")}, s);
    ts.forEach(function (t, i) {
      el("circle", {"class": series[i][1] ? "obs" : "obs dry", cx: x(t), cy: y(as[i]), r: 3}, s);
    });
    el("text", {x: L - 4, y: T + 8, "text-anchor": "end"}, s).textContent = fmt(Math.round(a1)) + " m²";
    el("text", {x: L - 4, y: H - B, "text-anchor": "end"}, s).textContent = "0";
    el("text", {x: L, y: H - 6}, s).textContent = new Date(t0).toISOString().slice(0, 10);
    el("text", {x: W - R, y: H - 6, "text-anchor": "end"}, s).textContent = new Date(t1).toISOString().slice(0, 10);
  }
  function show(lake, path) {
    if (selected) { selected.classList.remove("selected"); }
    selected = path; path.classList.add("selected");
    popup.textContent = "";
    var close = html("button", "×", popup);
    close.className = "close";
    close.addEventListener("click", function () { popup.style.display = "none"; });
    html("h3", "lake " + lake.id, popup).style.margin = "0 0 4px";
    var table = html("table", undefined, popup);
    data.columns.forEach(function (k, i) {
      var row = html("tr", undefined, table);
      html("td", k, row).className = "k";
      html("td", fmt(lake.attrs[i]), row);
    });
    html("div", "water area (m²) by sensing date", popup).style.fontWeight = "600";
    chart(lake.series, popup);
    popup.style.display = "block";
  }
  svg.addEventListener("click", function (e) {
    if (drag && drag.moved > 3) { return; }
    var id = e.target.getAttribute && e.target.getAttribute("data-lake-id");
    if (id !== null && byId[id]) { show(byId[id], e.target); }
  });

  fit();
  document.documentElement.setAttribute("data-lakes-drawn", String(view.querySelectorAll("path.lake").length));
})();
"""
