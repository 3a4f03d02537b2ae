// The OpenAPI page: Swagger UI from the swagger-ui-bundle package, served by this server.
window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
});
