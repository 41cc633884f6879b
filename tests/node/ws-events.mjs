// Read a job's WebSocket with the `ws` package and print, one JSON line each, every text
// frame ({"frame": ...}) and then how it closed ({"close": code}).
//
//   node ws-events.mjs URL [HEADERS_JSON]
import WebSocket from "ws";

const [url, headers = "{}"] = process.argv.slice(2);
const socket = new WebSocket(url, { headers: JSON.parse(headers), perMessageDeflate: false });
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

socket.on("message", (data, isBinary) => {
  print(isBinary ? { binary: data.length } : { frame: JSON.parse(data.toString("utf8")) });
});
socket.on("ping", () => print({ ping: true }));
socket.on("unexpected-response", (_request, response) => {
  print({ status: response.statusCode });
  process.exit(0);
});
socket.on("close", (code) => print({ close: code }));
socket.on("error", (error) => print({ error: error.message }));
