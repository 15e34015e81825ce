// The receipt's print button: an enhancement for browsers that run
// JavaScript. Without it the page says how to print, and print CSS does the rest.
document.querySelectorAll("button[data-print]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    window.print();
  });
});
