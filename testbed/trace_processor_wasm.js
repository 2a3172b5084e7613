// Perfetto's trace processor (its WebAssembly build, as the Perfetto UI runs it) served on a
// Unix socket, for the perfetto PyPI package's TraceProcessor(remote=SOCKET).
//
// node trace_processor_wasm.js DIST_DIR SOCKET
//
// DIST_DIR holds engine_bundle.js and trace_processor.wasm (a Perfetto UI build). The bundle is
// the UI's engine worker: it is run here in a context that looks like a web worker (self,
// importScripts, fetch reading DIST_DIR), and handed a message port whose messages are the
// bytes of the trace processor's RPC stream, exactly what `trace_processor server unix` reads
// and writes on its socket. Each connection's bytes go to the one engine; its replies go back to
// the connection that is open. Prints "ready" once it listens.
"use strict";
const fs = require("fs");
const net = require("net");
const path = require("path");
const vm = require("vm");

const [dist, socketPath] = process.argv.slice(2);
const read = (url) => fs.readFileSync(path.join(dist, path.basename(String(url).split("?")[0])));

// Whether the engine's WebAssembly is instantiated: requests before then would find no runtime.
let instantiated = false;
const wasm = Object.create(WebAssembly);
for (const name of ["instantiate", "instantiateStreaming"]) {
  wasm[name] = async (...args) => {
    const result = await WebAssembly[name](...args);
    setTimeout(() => { instantiated = true; }, 200);  // its runtime starts in the tasks before
    return result;
  };
}
wasm.Instance = new Proxy(WebAssembly.Instance, {
  construct(target, args) {
    const instance = new target(...args);
    setTimeout(() => { instantiated = true; }, 200);
    return instance;
  },
});

const port = { onmessage: null, postMessage: (data) => { if (current) current.write(data); } };
let current = null;
const sandbox = {
  console, WebAssembly: wasm, TextDecoder, TextEncoder, URL, Response, setTimeout, clearTimeout,
  queueMicrotask, performance, BigInt, Uint8Array, Error, TypeError, RangeError,
  location: { href: "http://localhost/engine_bundle.js" },
  importScripts: () => {},
  WorkerGlobalScope: class {},
  fetch: async (url) => new Response(read(url), { headers: { "Content-Type": "application/wasm" } }),
  XMLHttpRequest: class {
    open(_m, url) { this.url = url; }
    send() { this.response = read(this.url).buffer; this.status = 200; }
  },
  onmessage: null,
};
sandbox.self = sandbox;
sandbox.globalThis = sandbox;
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(path.join(dist, "engine_bundle.js"), "utf8"), sandbox,
                { filename: "engine_bundle.js" });
sandbox.onmessage({ data: port });

const server = net.createServer((sock) => {
  current = sock;
  sock.on("data", (buf) => {
    const copy = new Uint8Array(buf.length);
    copy.set(buf);
    port.onmessage({ data: copy });
  });
  sock.on("close", () => { if (current === sock) current = null; });
});
// The engine instantiates asynchronously; wait until it answers before saying ready.
const started = Date.now();
(function wait() {
  if (instantiated && port.onmessage) {
    server.listen(socketPath, () => console.log("ready"));
  } else if (Date.now() - started > 60000) {
    console.error("the trace processor did not start");
    process.exit(1);
  } else {
    setTimeout(wait, 50);
  }
})();
