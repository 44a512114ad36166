// An HTTPS server (Node's https, its built-in OpenSSL): `server.js PORT CERT KEY`; /ok is 200,
// everything else 404; prints "ready" once it listens.
const https = require("https");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);
https
  .createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(req.url === "/ok" ? 200 : 404, { "content-length": "3" });
      res.end("ok\n");
    });
  })
  .listen(Number(port), "127.0.0.1", () => console.log("ready"));
