// Small behaviours that templates would otherwise carry inline, which the Content-Security-Policy
// forbids: data-autosubmit submits its form when the value changes; data-history-back goes back.
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    var field = event.target.closest("[data-autosubmit]");
    if (field && field.form) { field.form.requestSubmit(); }
  });

  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-history-back]")) { return; }
    event.preventDefault();
    history.back();
  });
})();
