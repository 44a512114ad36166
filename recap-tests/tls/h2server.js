// An HTTP/2 server over TLS (Node's http2 module, its built-in OpenSSL, ALPN h2):
// `h2server.js PORT CERT KEY`; /ok is 200, /fail 503, everything else 404; prints "ready".
const http2 = require("http2");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);
http2
  .createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) })
  .on("stream", (stream, headers) => {
    const path = headers[":path"];
    const status = path === "/ok" ? 200 : path === "/fail" ? 503 : 404;
    stream.respond({ ":status": status, "content-type": "text/plain" });
    stream.end("ok\n");
  })
  .listen(Number(port), "127.0.0.1", () => console.log("ready"));
