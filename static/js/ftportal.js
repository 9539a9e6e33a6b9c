// Keyboard shortcuts for the review queue: a key clicks the element carrying data-key.
// Special cases: e opens the answer editor, an element with data-opens="#form" reveals that
// form and focuses its first field, a data-key input (the search box) takes the focus.
(function () {
  "use strict";

  function editForm() { return document.querySelector(".edit-form"); }

  function reveal(form) {
    if (!form) { return; }
    form.hidden = false;
    var field = form.querySelector("textarea, input:not([type=hidden])");
    if (!field) { return; }
    field.focus();
    if (field.setSelectionRange) { field.setSelectionRange(field.value.length, field.value.length); }
  }

  function openEditor() { reveal(editForm()); }

  function closeForms() {
    document.querySelectorAll(".key-submit").forEach(function (form) { form.hidden = true; });
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("#edit-button")) { openEditor(); return; }
    var opener = event.target.closest("[data-opens]");
    if (opener) { reveal(document.querySelector(opener.getAttribute("data-opens"))); }
  });

  document.addEventListener("keydown", function (event) {
    var typing = event.target.closest("textarea, input, select");
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.closest(".key-submit")) {
        event.preventDefault();
        event.target.closest("form").requestSubmit();
      } else if (event.key === "Escape") {
        closeForms();
        event.target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "e") { event.preventDefault(); openEditor(); return; }
    var target = document.querySelector('[data-key="' + CSS.escape(event.key) + '"]');
    if (!target) { return; }
    event.preventDefault();
    if (target.matches("input, textarea, select")) { target.focus(); target.select(); return; }
    target.click();
  });
})();

// The failure browser: a "select all on this page" box and the count on the send button. The
// row checkboxes name their form with form="…", so they are found by that attribute.
(function () {
  "use strict";

  function boxes(formId, extra) {
    return document.querySelectorAll('input[name="results"][form="' + formId + '"]' + extra);
  }

  function recount(formId) {
    var label = document.querySelector("#" + formId + " [data-chosen-count]");
    if (label) { label.textContent = String(boxes(formId, ":checked").length); }
  }

  document.addEventListener("change", function (event) {
    var all = event.target.closest("[data-select-all]");
    var formId = all ? all.getAttribute("data-select-all") : event.target.getAttribute("form");
    if (all) { boxes(formId, ":not(:disabled)").forEach(function (box) { box.checked = all.checked; }); }
    if (formId) { recount(formId); }
  });

  // A page restored from history may come back with boxes ticked.
  document.querySelectorAll("[data-select-all]").forEach(function (all) {
    recount(all.getAttribute("data-select-all"));
  });
})();
