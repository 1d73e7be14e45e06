// Starts Swagger UI (swagger-ui-bundle.js) on #swagger-ui, over the document that the
// element's data-spec attribute names. It is a file of its own because the page's
// Content-Security-Policy allows no inline script.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No calls to the public validator: the document stays on this server.
    validatorUrl: null,
  });
});
