// fxray web UI, triggers page: A/B weights must add up to 100. Checked here before the form
// is sent (the error shown next to the form, as the server shows its own), and by the server.
"use strict";

(function () {
  var TOTAL = 100;

  function problem(form) {
    var sum = 0;
    var any = false;
    var bad = null;
    form.querySelectorAll('input[name="weight"]').forEach(function (input) {
      var text = input.value.trim();
      if (text === "") {
        return;
      }
      any = true;
      if (!/^\d+$/.test(text)) {
        bad = "weights are whole numbers from 0 to " + TOTAL;
      } else {
        sum += parseInt(text, 10);
      }
    });
    if (bad) {
      return bad;
    }
    if (any && sum !== TOTAL) {
      return "the weights must add up to " + TOTAL + " (they add up to " + sum + ")";
    }
    return null;
  }

  function show(form, text) {
    var list = form.querySelector("ul.problems");
    form.querySelectorAll('input[name="weight"]').forEach(function (input) {
      if (text) {
        input.setAttribute("aria-invalid", "true");
      } else {
        input.removeAttribute("aria-invalid");
      }
    });
    if (!text) {
      if (list) {
        list.remove();
      }
      return;
    }
    if (!list) {
      list = document.createElement("ul");
      list.className = "problems";
      list.setAttribute("role", "alert");
      form.appendChild(list);
    }
    var item = document.createElement("li");
    item.textContent = text;
    list.replaceChildren(item);
  }

  // Capture phase: runs before htmx's own submit handler on the form, and stops it.
  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.classList.contains("weights")) {
        return;
      }
      var text = problem(form);
      if (text) {
        event.preventDefault();
        event.stopImmediatePropagation();
        show(form, text);
      }
    },
    true
  );

  document.addEventListener("input", function (event) {
    var input = event.target;
    if (input instanceof HTMLInputElement && input.name === "weight" && input.form &&
        input.form.classList.contains("weights") && input.form.querySelector("ul.problems")) {
      show(input.form, problem(input.form));
    }
  });
})();
