// meguri Studio: draws the page's Plotly figures. Each figure is a <div data-figure="ID">
// whose spec (data, layout) is the JSON of <script type="application/json" id="ID">; the
// page itself carries no inline script, so it runs under a script-src 'self' policy.
(function () {
  "use strict";

  function draw(root) {
    if (!window.Plotly) {
      return;
    }
    root.querySelectorAll("[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.dataset.figure);
      if (!source || el.dataset.drawn) {
        return;
      }
      var spec = JSON.parse(source.textContent);
      el.dataset.drawn = "1";
      window.Plotly.newPlot(el, spec.data, spec.layout || {}, {
        displayModeBar: false,
        responsive: true,
      });
    });
  }

  draw(document);
  // Fragments swapped in by htmx (e.g. the runs table) may bring figures of their own.
  document.addEventListener("htmx:afterSettle", function (event) {
    draw(event.target);
  });
})();
