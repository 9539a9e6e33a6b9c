// Keyboard shortcuts for the review queue: a key clicks the element carrying data-key.
(function () {
  "use strict";

  function editForm() { return document.querySelector(".edit-form"); }

  function openEditor() {
    var form = editForm();
    if (!form) { return; }
    form.hidden = false;
    var area = form.querySelector("textarea");
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  function closeEditor() {
    var form = editForm();
    if (form) { form.hidden = true; }
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("#edit-button")) { openEditor(); }
  });

  document.addEventListener("keydown", function (event) {
    var typing = event.target.closest("textarea, input, select");
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.closest(".edit-form")) {
        event.preventDefault();
        event.target.closest("form").requestSubmit();
      } else if (event.key === "Escape") {
        closeEditor();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "e") { event.preventDefault(); openEditor(); return; }
    var target = document.querySelector('[data-key="' + event.key + '"]');
    if (target) { event.preventDefault(); target.click(); }
  });
})();
