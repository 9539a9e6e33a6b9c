// Draws every chart of a page with the vendored Chart.js (static/vendor/chart.umd.min.js).
// A <canvas data-chart="ID"> takes its data from the JSON element with that id, which
// templates/ftportal/chart.html writes from a chart built by ftportal/charts.py: axes (a title
// with its unit, a value format, optional bounds, category labels; a second value axis on the
// right when one is given) and named series of [x, y] points. Templates carry no chart code.
//
// A chart may carry markers ({x, label}: a promotion, a rollback): each is drawn as a dashed
// vertical line across the plot at that x (on a category axis, the category named x) with its
// label at the top, by the small plugin below; charts without markers do not load it.
//
// htmx replaces parts of a page while it polls (the job page every 2 s), canvases included:
// after each swap the charts whose canvas left the page are destroyed, so none is left behind
// listening for resizes, and the new canvases are drawn.
(function () {
  "use strict";

  // Colour-blind-safe hues (Okabe and Ito), in series order.
  var COLOURS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000"];

  var FORMATS = {
    decimal: function (value) { return formatNumber(value, { maximumSignificantDigits: 4 }); },
    integer: function (value) { return formatNumber(value, { maximumFractionDigits: 0 }); },
    scientific: function (value) { return value === 0 ? "0" : value.toExponential(2); },
    // Fractions, written as the rest of the product writes them ("25.0 %").
    percent: function (value) { return (value * 100).toFixed(1) + " %"; },
    usd: function (value) {
      return formatNumber(value, { style: "currency", currency: "USD", maximumFractionDigits: 4 });
    },
  };
  // Ticks are read at a glance: fewer digits than tooltips.
  var TICK_FORMATS = {
    decimal: FORMATS.decimal,
    integer: FORMATS.integer,
    scientific: function (value) { return value === 0 ? "0" : value.toExponential(1); },
    percent: function (value) { return Math.round(value * 100) + " %"; },
    usd: function (value) { return formatNumber(value, { style: "currency", currency: "USD" }); },
  };

  function formatNumber(value, options) {
    return new Intl.NumberFormat("en-US", options).format(value);
  }

  function scale(axis, ticks) {
    var options = { title: { display: true, text: axis.title }, ticks: {} };
    if (ticks) { options.ticks.callback = ticks; }
    if (axis.labels.length) {
      options.type = "category";
      options.labels = axis.labels;
    } else {
      options.type = "linear";
      if (axis.format === "integer") { options.ticks.precision = 0; }
    }
    if (axis.min !== null) { options.min = axis.min; }
    if (axis.max !== null) { options.max = axis.max; }
    return options;
  }

  var MARKER_COLOUR = "#5b6475";
  var MARKER_FONT = "11px system-ui, sans-serif";

  // Where a marker's x lies on the x axis, in pixels; null when the axis does not hold it.
  function markerPixel(scale, x) {
    if (scale.type === "category") {
      var index = scale.getLabels().indexOf(String(x));
      return index < 0 ? null : scale.getPixelForValue(index);
    }
    return typeof x === "number" ? scale.getPixelForValue(x) : null;
  }

  // Draws options.markers after the datasets: a dashed line and its label (canvas text, so
  // a label is never markup). Labels at the same x are stacked so that they stay readable.
  var markerPlugin = {
    id: "markers",
    afterDatasetsDraw: function (chart, args, options) {
      var area = chart.chartArea;
      var context = chart.ctx;
      var rows = {};
      (options.markers || []).forEach(function (marker) {
        var x = markerPixel(chart.scales.x, marker.x);
        if (x === null || x < area.left || x > area.right) { return; }
        var row = rows[x] = (rows[x] || 0) + 1;
        context.save();
        context.strokeStyle = MARKER_COLOUR;
        context.lineWidth = 1;
        context.setLineDash([4, 3]);
        context.beginPath();
        context.moveTo(x, area.top);
        context.lineTo(x, area.bottom);
        context.stroke();
        context.setLineDash([]);
        context.fillStyle = MARKER_COLOUR;
        context.font = MARKER_FONT;
        context.textBaseline = "top";
        // Right of the line, or left of it near the right edge.
        var width = context.measureText(marker.label).width;
        var left = x + 3 + width > area.right;
        context.textAlign = left ? "right" : "left";
        context.fillText(marker.label, left ? x - 3 : x + 3, area.top + 2 + (row - 1) * 13);
        context.restore();
      });
    },
  };

  function config(spec) {
    var scales = {
      // A category axis (model versions) shows its labels as they are.
      x: scale(spec.x, spec.x.labels.length ? null : TICK_FORMATS[spec.x.format]),
      y: scale(spec.y, TICK_FORMATS[spec.y.format]),
    };
    // Bars are stacked: a month's bar is its total, each kind a part of it.
    var bars = spec.style === "bar";
    if (bars) { scales.x.stacked = true; scales.y.stacked = true; }
    if (spec.y2) {
      scales.y2 = scale(spec.y2, TICK_FORMATS[spec.y2.format]);
      scales.y2.position = "right";
      scales.y2.grid = { drawOnChartArea: false };  // one grid, the left axis's
    }
    var markers = spec.markers || [];
    var plugins = {
      legend: { display: true, position: "bottom" },
      tooltip: {
        callbacks: {
          // "Step 12", "Model version v2": the item's label is its x as the axis writes it.
          title: function (items) { return items.length ? spec.x.title + " " + items[0].label : ""; },
          label: function (item) {
            var format = FORMATS[spec[item.dataset.yAxisID].format];
            return item.dataset.label + ": " + format(item.parsed.y);
          },
        },
      },
    };
    if (markers.length) { plugins.markers = { markers: markers }; }
    return {
      type: bars ? "bar" : "line",
      plugins: markers.length ? [markerPlugin] : [],
      data: {
        datasets: spec.series.map(function (series, index) {
          var colour = COLOURS[index % COLOURS.length];
          return {
            label: series.name,
            yAxisID: series.axis,
            data: series.points.map(function (point) { return { x: point[0], y: point[1] }; }),
            borderColor: colour,
            backgroundColor: colour,
            borderWidth: 2,
            // A series against the right-hand axis is dashed, so its unit is not mistaken.
            borderDash: series.axis === "y2" ? [6, 4] : [],
            // Sparse series (validation loss, one point per version) get visible points.
            pointRadius: series.points.length > 40 ? 0 : 3,
            pointHoverRadius: 5,
            tension: 0,
          };
        }),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        // Polling redraws the job page's charts every 2 s; animating each redraw would flicker.
        animation: false,
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        interaction: { mode: "nearest", intersect: false },
        scales: scales,
        plugins: plugins,
      },
    };
  }

  // --- Heat maps (ftportal.charts.HeatMap: a confusion matrix) -----------------------------
  //
  // Drawn as a core scatter chart of square points, one per non-zero cell, rather than with
  // the chartjs-chart-matrix plugin: nothing more to vendor and keep in step with Chart.js,
  // and a confusion matrix of a hundred labels, mostly zeros, costs one point per non-zero
  // cell instead of L x (L + 1) rectangles. Each point's size follows the plot's cell size,
  // so the squares tile the plot at any width. Labels (up to 200 characters) are cut short
  // on the axes and written in full in the tooltip; all of it is canvas text, never markup.

  var HEAT_TICK_CHARACTERS = 28;
  var HEAT_CELL_MIN = 8;  // pixels
  var HEAT_CELL_MAX = 28;
  var HEAT_MAX_HEIGHT = 2400;  // a thousand labels still fit a scrollable page
  var HEAT_AXIS_ROOM = 170;  // the answered axis: its rotated labels, its title, the legend
  var HEAT_LABEL_ROOM = 200;  // the expected axis's labels, left of the plot

  // Cut in the middle: labels that share a long opening ("card payment declined at ...")
  // still differ at their ends.
  function shortLabel(text) {
    if (text.length <= HEAT_TICK_CHARACTERS) { return text; }
    var head = Math.ceil((HEAT_TICK_CHARACTERS - 1) / 2);
    return text.slice(0, head) + "…" + text.slice(text.length - (HEAT_TICK_CHARACTERS - 1 - head));
  }

  function shaded(hex, shade) {
    var value = parseInt(hex.slice(1), 16);
    // Even a cell of one answer in a large label stays visible.
    var alpha = 0.15 + 0.85 * Math.max(0, Math.min(1, shade));
    return "rgba(" + (value >> 16) + "," + ((value >> 8) & 255) + "," + (value & 255) + "," + alpha + ")";
  }

  function heatAxis(axis, cellPixels, horizontal) {
    return {
      type: "category",
      labels: axis.labels,
      offset: true,
      title: { display: true, text: axis.title },
      grid: { display: false },
      ticks: {
        autoSkip: cellPixels < 12,
        maxRotation: horizontal ? 90 : 0,
        minRotation: horizontal ? 90 : 0,
        font: { size: Math.max(9, Math.min(12, cellPixels - 2)) },
        callback: function (value) { return shortLabel(String(this.getLabelForValue(value))); },
      },
    };
  }

  function heatMapConfig(canvas, spec) {
    var columns = Math.max(1, spec.x.labels.length);
    var rows = Math.max(1, spec.y.labels.length);
    var box = canvas.parentNode;
    box.classList.add("heatmap");
    // The box grows with the labels, so each row stays readable (CSSOM, allowed by the CSP).
    // A box inside a closed <details> has no width yet: size it for the page's width.
    var width = box.clientWidth || document.documentElement.clientWidth;
    var cell = Math.max(HEAT_CELL_MIN, Math.min(HEAT_CELL_MAX, (width - HEAT_LABEL_ROOM) / columns));
    box.style.height = Math.min(HEAT_MAX_HEIGHT, rows * cell + HEAT_AXIS_ROOM) + "px";
    function radius(context) {
      var area = context.chart.chartArea;
      if (!area) { return 2; }
      // A "rect" point is a square of side radius x sqrt(2); a hair less leaves a gap.
      var side = Math.min(area.width / columns, area.height / rows);
      return Math.max(1, side * 0.92 / Math.SQRT2);
    }
    return {
      type: "scatter",
      data: {
        datasets: spec.groups.map(function (group, index) {
          var colour = COLOURS[index % COLOURS.length];
          return {
            label: group.name,
            data: group.cells.map(function (c) { return { x: c[0], y: c[1], count: c[2], shade: c[3] }; }),
            pointStyle: "rect",
            pointRadius: radius,
            pointHoverRadius: radius,
            borderWidth: 0,
            backgroundColor: function (context) {
              return context.raw ? shaded(colour, context.raw.shade) : colour;
            },
          };
        }),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        parsing: false,  // cells are {x: column, y: row} indices already
        interaction: { mode: "point", intersect: true },
        scales: { x: heatAxis(spec.x, cell, true), y: heatAxis(spec.y, cell, false) },
        plugins: {
          legend: { display: true, position: "bottom", labels: { usePointStyle: true } },
          tooltip: {
            callbacks: {
              title: function (items) {
                if (!items.length) { return ""; }
                var raw = items[0].raw;
                return [spec.y.title + ": " + spec.y.labels[raw.y], spec.x.title + ": " + spec.x.labels[raw.x]];
              },
              label: function (item) {
                return item.raw.count + " " + spec.count_title + " (" + FORMATS.percent(item.raw.shade) +
                  " " + spec.shade.title + ")";
              },
            },
          },
        },
      },
    };
  }

  function drawCharts() {
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (window.Chart.getChart(canvas)) { return; }
      var source = document.getElementById(canvas.getAttribute("data-chart"));
      if (!source) { return; }
      var spec = JSON.parse(source.textContent);
      new window.Chart(canvas, spec.kind === "heatmap" ? heatMapConfig(canvas, spec) : config(spec));
    });
  }

  function destroyDetached() {
    Object.values(window.Chart.instances).forEach(function (chart) {
      if (!chart.canvas || !chart.canvas.isConnected) { chart.destroy(); }
    });
  }

  // Charts already drawn are left as they are, so this runs as often as content arrives.
  function refresh() {
    if (!window.Chart) { return; }
    destroyDetached();
    drawCharts();
  }

  document.addEventListener("DOMContentLoaded", refresh);
  // htmx 2 fires htmx:load on each piece of content it swaps in.
  document.addEventListener("htmx:load", refresh);
})();
