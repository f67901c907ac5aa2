// Many idle subscribers for benchmarks/fanout.py: one process holds `count` graphql-transport-ws sockets.
//
//   node fanout-client.mjs <ws://host:port/graphql> <count> <measured-changes>
//
// Token from FANOUT_AUTHORIZATION. Every socket subscribes to instanceStatusChanges. Reports, one JSON
// line each on stdout: {"acked": n} once every socket is acknowledged; {"warm": true} once every socket
// got the first change of an instance named "warm-*" (so all subscriptions are in place); then
// {"latencies": {"bench-0:PENDING": [ms, ...], ...}} once every socket got `measured-changes` changes of instances named
// "bench-*", each latency being the receive time minus the change's `at` (same machine, same clock).
import WebSocket from "ws";

const [url, countText, measuredText] = process.argv.slice(2);
const count = Number(countText);
const measured = Number(measuredText);
const authorization = process.env.FANOUT_AUTHORIZATION;
const QUERY = "subscription { instanceStatusChanges { at to instance { name } } }";
const BATCH = 250; // sockets opened at once: keeps the accept backlog short

const latencies = {}; // change (name:to) -> the latency of each socket, ms
let acked = 0;
let warmed = 0;
let done = 0;

function print(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

function open() {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, "graphql-transport-ws", { perMessageDeflate: false });
    let warm = false;
    let seen = 0;
    socket.on("open", () => {
      socket.send(JSON.stringify({ type: "connection_init", payload: { authorization } }));
    });
    socket.on("message", (data) => {
      const received = Date.now();
      const message = JSON.parse(data);
      if (message.type === "connection_ack") {
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: QUERY } }));
        acked += 1;
        resolve(socket);
      } else if (message.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
      } else if (message.type === "next") {
        const change = message.payload.data.instanceStatusChanges;
        const name = change.instance.name;
        if (name.startsWith("warm-") && !warm) {
          warm = true;
          warmed += 1;
          if (warmed === count) print({ warm: true });
        } else if (name.startsWith("bench-")) {
          const key = `${name}:${change.to}`;
          (latencies[key] ??= []).push(received - Date.parse(change.at));
          seen += 1;
          if (seen === measured) {
            done += 1;
            if (done === count) print({ latencies });
          }
        }
      }
    });
    socket.on("error", reject);
    socket.on("close", (code, reason) => {
      if (done < count) print({ closed: code, reason: reason.toString() });
    });
  });
}

for (let start = 0; start < count; start += BATCH) {
  const batch = [];
  for (let n = start; n < Math.min(count, start + BATCH); n += 1) batch.push(open());
  await Promise.all(batch);
}
print({ acked });
// Stays up until the benchmark ends it.
