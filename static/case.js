// The case page: after a refused form the page comes back with the refusal next to that
// form; bring it into view and give it the focus (screen readers read it out). No inline
// script: the Content-Security-Policy forbids it.
(function () {
  var refusal = document.querySelector("[data-refused-form]");
  if (!refusal) { return; }
  var target = document.getElementById(refusal.getAttribute("data-refused-form") + "-refusal")
    || document.getElementById("form-" + refusal.getAttribute("data-refused-form"));
  if (target) {
    if (!target.hasAttribute("tabindex")) { target.setAttribute("tabindex", "-1"); }
    target.scrollIntoView({ block: "start" });
    target.focus({ preventScroll: true });
  }
})();
