/* torchdoctor HTML report: icicle chart of the module tree (forward / backward / both).
   Inlined at render time; reads the session from <script type="application/json" id="td-data">.
   Every string from the session is written with textContent, never parsed as HTML. */
(function () {
  "use strict";
  var errors = [];
  function recordError(message) {
    errors.push(String(message));
    var box = document.getElementById("td-errors");
    if (box) { box.textContent = errors.join("\n"); }
  }
  window.addEventListener("error", function (event) { recordError(event.message); });
  var consoleError = console.error;
  console.error = function () {
    recordError(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };

  var ROW = 24;
  var data = JSON.parse(document.getElementById("td-data").textContent);
  var tree = data.tree;
  var stepMs = data.step_ms || 0;
  var chart = document.getElementById("chart");
  var detail = document.getElementById("chart-detail");
  var crumbs = document.getElementById("chart-crumbs");
  var mode = "total";
  var requested = /mode=(forward|backward|total)/.exec(window.location.hash || "");
  if (requested) { mode = requested[1]; }  // e.g. report.html#mode=backward
  var focus = tree;
  var palette = ["#93c5fd", "#a5b4fc", "#c4b5fd", "#f9a8d4", "#fdba74", "#fcd34d",
                 "#86efac", "#5eead4", "#7dd3fc", "#fca5a5", "#d9f99d", "#e9d5ff"];

  function center(stat) {
    if (stat === null || stat === undefined) { return 0; }
    if (typeof stat === "number") { return stat; }
    if (typeof stat.mean === "number") { return stat.mean; }  // means add up across the tree
    return typeof stat.median === "number" ? stat.median : 0;
  }
  function value(node) {
    if (mode === "forward") { return center(node.forward_ms); }
    if (mode === "backward") { return center(node.backward_ms); }
    var total = center(node.total_ms);
    return total > 0 ? total : center(node.forward_ms) + center(node.backward_ms);
  }
  function color(node) {
    var key = String(node.type || node.kind || node.name || "");
    var hash = 0;
    for (var i = 0; i < key.length; i++) { hash = (hash * 31 + key.charCodeAt(i)) >>> 0; }
    return palette[hash % palette.length];
  }
  function fmt(ms) {
    if (ms >= 100) { return ms.toFixed(0) + " ms"; }
    if (ms >= 10) { return ms.toFixed(1) + " ms"; }
    return ms.toPrecision(3) + " ms";
  }
  function label(node) { return String(node.path || node.name || "step"); }
  function shortName(node) {
    var parts = label(node).split(".");
    var last = parts.pop();
    // "layers.3" reads better than "3"
    return /^[0-9]+$/.test(last) && parts.length ? parts.pop() + "." + last : last;
  }

  function describe(node) {
    var parts = [label(node)];
    if (node.type) { parts.push("(" + node.type + ")"); }
    parts.push("forward " + fmt(center(node.forward_ms)));
    parts.push("backward " + fmt(center(node.backward_ms)));
    if (stepMs > 0) { parts.push((100 * value(node) / stepMs).toFixed(1) + "% of the step (" + mode + ")"); }
    if (node.calls_per_step) { parts.push(Number(node.calls_per_step.toPrecision(3)) + " call(s)/step"); }
    if (node.source && node.source.file) { parts.push(node.source.file + ":" + node.source.line); }
    return parts.join("  ·  ");
  }

  function draw() {
    while (chart.firstChild) { chart.removeChild(chart.firstChild); }
    var base = value(focus);
    if (!focus || base <= 0) {
      var empty = document.createElement("div");
      empty.className = "empty";
      empty.textContent = "No " + mode + " time recorded for this part of the tree.";
      chart.appendChild(empty);
      chart.style.height = "60px";
      chart.setAttribute("data-nodes", "0");
      return;
    }
    var count = 0;
    var maxDepth = 0;
    function place(node, left, width, depth) {
      var box = document.createElement("div");
      box.className = "node" + (node.kind === "self" ? " self" : "");
      box.style.left = left + "%";
      box.style.width = Math.max(width, 0.05) + "%";
      box.style.top = (depth * ROW) + "px";
      box.style.background = color(node);
      box.textContent = shortName(node) + " " + fmt(value(node));
      box.title = describe(node);
      box.setAttribute("data-path", label(node));
      box.addEventListener("mouseenter", function () { detail.textContent = describe(node); });
      box.addEventListener("click", function () { focus = node; draw(); });
      chart.appendChild(box);
      count += 1;
      maxDepth = Math.max(maxDepth, depth);
      var children = node.children || [];
      var total = 0;
      for (var i = 0; i < children.length; i++) { total += Math.max(value(children[i]), 0); }
      var own = Math.max(value(node), 0);
      var scale = total > own && total > 0 ? own / total : 1;  // never draw children past a parent
      var x = left;
      for (var j = 0; j < children.length; j++) {
        var w = own > 0 ? width * Math.max(value(children[j]), 0) * scale / own : 0;
        if (w >= 0.05) { place(children[j], x, w, depth + 1); }
        x += w;
      }
    }
    place(focus, 0, 100, 0);
    chart.style.height = ((maxDepth + 1) * ROW + 2) + "px";
    chart.setAttribute("data-nodes", String(count));
    chart.setAttribute("data-mode", mode);
    crumbs.textContent = focus === tree ? "" : "zoomed into " + label(focus) + " (click Reset to zoom out)";
  }

  var buttons = document.querySelectorAll("#chart-controls button[data-mode]");
  for (var a = 0; a < buttons.length; a++) {
    buttons[a].classList.toggle("active", buttons[a].getAttribute("data-mode") === mode);
  }
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", function (event) {
      mode = event.currentTarget.getAttribute("data-mode");
      for (var k = 0; k < buttons.length; k++) { buttons[k].classList.remove("active"); }
      event.currentTarget.classList.add("active");
      draw();
    });
  }
  document.getElementById("chart-reset").addEventListener("click", function () { focus = tree; draw(); });

  if (tree) {
    draw();
  } else {
    var none = document.createElement("div");
    none.className = "empty";
    none.textContent = "No module tree was recorded in this session.";
    chart.appendChild(none);
    chart.setAttribute("data-nodes", "0");
  }
  document.body.setAttribute("data-rendered", "true");
})();
