// The docs page: Swagger UI on this server's own OpenAPI document. No validator badge and no
// other outside requests; "Try it out" calls this server (with the Authorize button's key).
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: true,
});
