// hello: the "Hello World!" web server of the Kubernetes introduction, run by the stock
// Node.js image as `node /app/hello.js` (templates/apps/hello/values.yaml). It listens on
// the container port of values.yaml, logs each request and exits promptly on SIGTERM so a
// rollout or drain does not wait out the grace period.
"use strict";

const http = require("node:http");

const PORT = 8000;

const server = http.createServer((request, response) => {
  console.log(`Received request for URL: ${request.url}`);
  response.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
  response.end("Hello World!");
});

server.listen(PORT, () => console.log(`hello listening on port ${PORT}`));

process.on("SIGTERM", () => server.close(() => process.exit(0)));
