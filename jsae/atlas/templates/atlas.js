// jsae feature atlas: sorting, search and audio durations. Plain script, no libraries,
// loaded from the atlas folder (the pages' CSP: script-src 'self'); it only reads the page.
"use strict";
(function () {
  function cellValue(row, i, numeric) {
    var cell = row.cells[i];
    if (!cell) { return numeric ? NaN : ""; }
    if (numeric) {
      var raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
      var x = parseFloat(String(raw).replace(/\u2212/g, "-"));
      return x;
    }
    return cell.textContent.trim().toLowerCase();
  }

  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var i = headers.indexOf(th);
    var numeric = th.getAttribute("data-type") === "num";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = cellValue(a, i, numeric), y = cellValue(b, i, numeric);
        if (numeric) {
          var nx = isNaN(x), ny = isNaN(y);
          if (nx || ny) { return nx === ny ? 0 : (nx ? 1 : -1); }   // empty cells last, either way
          return asc ? x - y : y - x;
        }
        if (x === y) { return 0; }
        if (x === "") { return 1; }
        if (y === "") { return -1; }
        return asc ? (x < y ? -1 : 1) : (x < y ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  }

  function initSorting() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      if (!table.tHead) { return; }
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        th.setAttribute("tabindex", "0");
        th.setAttribute("title", "sort by this column");
        th.addEventListener("click", function () { sortBy(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
        });
      });
    });
  }

  function filter(table, text, counter) {
    var words = text.toLowerCase().split(/\s+/).filter(function (w) { return w.length > 0; });
    var shown = 0, total = 0;
    Array.prototype.forEach.call(table.tBodies, function (body) {
      Array.prototype.forEach.call(body.rows, function (row) {
        var hay = row.textContent.toLowerCase();
        var ok = words.every(function (w) { return hay.indexOf(w) >= 0; });
        row.hidden = !ok;
        total += 1;
        if (ok) { shown += 1; }
      });
    });
    if (counter) { counter.textContent = shown + " of " + total + " latents"; }
  }

  function initSearch() {
    var input = document.getElementById("search");
    var table = document.querySelector("table.searchable");
    if (!input || !table) { return; }
    var counter = document.getElementById("count");
    var q = new URLSearchParams(window.location.search).get("q");
    if (q) { input.value = q; }
    input.addEventListener("input", function () { filter(table, input.value, counter); });
    filter(table, input.value, counter);
  }

  function initAudio() {
    Array.prototype.forEach.call(document.querySelectorAll("audio"), function (audio) {
      var label = audio.parentNode ? audio.parentNode.querySelector(".dur") : null;
      function loaded() {
        if (!isFinite(audio.duration)) { return; }
        audio.setAttribute("data-duration", audio.duration.toFixed(3));
        if (label) { label.textContent = audio.duration.toFixed(1) + " s"; }
      }
      function failed() {
        var code = audio.error ? String(audio.error.code) : "unknown";
        audio.setAttribute("data-error", code);
        if (label) { label.textContent = "cannot play (error " + code + ")"; }
      }
      audio.addEventListener("loadedmetadata", loaded);
      audio.addEventListener("durationchange", loaded);
      audio.addEventListener("error", failed);
      if (audio.readyState >= 1) { loaded(); }
      if (audio.error) { failed(); }
    });
  }

  function init() { initSorting(); initSearch(); initAudio(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
