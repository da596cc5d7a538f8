// Starts Swagger UI for /docs. Kept out of the HTML so the page needs no inline script (CSP).
// The OpenAPI document's URL comes from the data-openapi-url attribute of #swagger-ui.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") return;
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url") || "/openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null, // never contact validator.swagger.io
    presets: [window.SwaggerUIBundle.presets.apis],
  });
})();
