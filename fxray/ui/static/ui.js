// fxray web UI: the little the pages need beyond htmx. No inline scripts (the CSP forbids them).
"use strict";

// A "choose all" checkbox (class select-all, data-select=<name>) ticks the boxes of that name
// in its form.
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.classList.contains("select-all")) {
    return;
  }
  var form = box.form || document;
  var boxes = form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.select + '"]');
  boxes.forEach(function (one) {
    one.checked = box.checked;
  });
});

// After a message lands in the page's message area, move focus there for keyboard and
// screen-reader users, and keep it in view.
document.addEventListener("htmx:afterSwap", function (event) {
  var target = event.detail && event.detail.target;
  if (target && target.id === "flash" && target.firstElementChild) {
    target.setAttribute("tabindex", "-1");
    target.focus({ preventScroll: false });
  }
});
