// Keyboard shortcuts of the review queue (the page works without them): j/k move between cases,
// b confirms the current case, r jumps to its department choice.
(function () {
  "use strict";
  function cases() { return Array.prototype.slice.call(document.querySelectorAll("article.case[data-request-id]")); }
  function current() {
    var focused = document.activeElement && document.activeElement.closest("article.case");
    return focused || document.querySelector("article.case.current");
  }
  function select(article) {
    cases().forEach(function (a) { a.classList.remove("current"); });
    if (!article) { return; }
    article.classList.add("current");
    article.focus();
    article.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var tag = event.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") { return; }
    var all = cases();
    if (!all.length) { return; }
    var here = current();
    var index = here ? all.indexOf(here) : -1;
    if (event.key === "j") { select(all[Math.min(index + 1, all.length - 1)]); event.preventDefault(); }
    else if (event.key === "k") { select(all[Math.max(index - 1, 0)]); event.preventDefault(); }
    else if (event.key === "b" && here) { here.querySelector("form.confirm button").click(); event.preventDefault(); }
    else if (event.key === "r" && here) { here.querySelector("select[data-key=r]").focus(); event.preventDefault(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    if (!document.getElementById("flash")) { return; }
    select(cases()[0]);
  });
}());
