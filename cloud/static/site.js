// Asks for confirmation before a destructive form is sent: <form data-confirm="Question?">.
// (A file, not inline handlers: the Content-Security-Policy allows scripts from this site only.)
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
