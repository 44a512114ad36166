// An HTTPS client on one keep-alive connection (Node's https, its built-in OpenSSL):
// `client.js PORT METHOD:PATH...`; says "ready", waits for a line on stdin, prints the
// statuses it got, then waits for another line before it exits.
const https = require("https");
const port = Number(process.argv[2]);
const asks = process.argv.slice(3).map((a) => a.split(/:(.*)/s).slice(0, 2));
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
const lines = [];
let waiting = null;
process.stdin.on("data", (d) => {
  for (const _ of d.toString().split("\n").slice(1)) lines.push(1);
  if (waiting && lines.length) { lines.shift(); const w = waiting; waiting = null; w(); }
});
const line = () => new Promise((r) => { if (lines.length) { lines.shift(); r(); } else waiting = r; });
const ask = (method, path) => new Promise((resolve, reject) => {
  const req = https.request({ host: "127.0.0.1", port, path, method, agent, rejectUnauthorized: false }, (res) => {
    res.resume();
    res.on("end", () => resolve(res.statusCode));
  });
  req.on("error", reject);
  req.end();
});
(async () => {
  console.log("ready");
  await line();
  const got = [];
  for (const [m, p] of asks) got.push(await ask(m, p));
  console.log(got.join(" "));
  await line();
  process.exit(0);
})();
