// The benchmark's destination process: a migration listener and, beside it, a plain WebSocket
// sink that counts what it receives, so raw ws throughput is measured between the very same
// two processes as the migration. It prints one JSON line with both addresses, then events.
// `--prealloc BYTES` gives the listener that much preallocated guest memory (listen --prealloc);
// `--footprint` adds the peak resident set to each event (B10).

import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { WebSocketServer } from "ws";
import { listen } from "../src/migrate/destination/listener.js";
import { MAX_PAYLOAD } from "../src/migrate/wire/protocol.js";
import { memoryMakeup, peakRssBytes, resetPeakRss } from "./footprint.js";

const token = process.env.BLMV_TOKEN;
if (!token) {
  process.stderr.write("bench destination: BLMV_TOKEN is not set\n");
  process.exit(2);
}
// Stopped by the benchmark with SIGTERM once its migration is measured: exit cleanly.
process.once("SIGTERM", () => process.exit(0));
const say = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

// Each event carries the CPU time this process has used so far, so a migration's cost here can be told apart from the wait.
const cpuMs = (): { user: number; system: number } => {
  const { user, system } = process.cpuUsage();
  return { user: user / 1000, system: system / 1000 };
};
const preallocAt = process.argv.indexOf("--prealloc");
const preallocBytes = preallocAt > 0 ? Number(process.argv[preallocAt + 1]) : undefined;
// With --footprint each event also carries the peak resident set since the migration's connection
// (the raw sink's phase before it left out) and what memory is made of then. Reading them costs
// reads of /proc at each event, in a downtime too (`ready`, `resumed`), so only the benchmarks
// that need them ask for them.
const footprint = process.argv.includes("--footprint");
const onEvent = (e: { event: string }): void => {
  if (footprint && e.event === "session") resetPeakRss();
  say({ ...e, cpuMs: cpuMs(), ...(footprint && { peakRssBytes: peakRssBytes(), memory: memoryMakeup() }) });
};
// BLMV_BENCH_HOST: the address to listen on (a network namespace's), 127.0.0.1 by default.
const host = process.env.BLMV_BENCH_HOST ?? "127.0.0.1";
const listener = await listen({ host, port: 0, token, maxMemoryBytes: 2 ** 31, preallocBytes, onEvent });
const sink = new WebSocketServer({ host, port: 0, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });
await once(sink, "listening");
// Binary frames are counted; a text frame asks for the count so far.
sink.on("connection", (ws) => {
  let bytes = 0;
  ws.on("message", (data: Buffer, binary: boolean) => {
    if (binary) bytes += data.length;
    else ws.send(String(bytes));
  });
});
say({ event: "listening", migrate: listener.url, sink: `ws://${host}:${(sink.address() as AddressInfo).port}`, memory: memoryMakeup() });
