// Talking to a running monitor from another process (`blmv migrate status|set|postcopy|cancel`):
// one HTTP(S) request with the token as a bearer token. See docs/monitor.md.

import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";

export interface MonitorEndpoint {
  /** http://HOST:PORT or https://HOST:PORT */
  url: string;
  token: string;
  /** For https: the PEM certificate the monitor must present or chain to. */
  ca?: string | Buffer;
  timeoutMs?: number;
}

export interface MonitorReply {
  status: number;
  body: unknown;
}

const DEFAULT_TIMEOUT_MS = 5000;

/** "[HOST:]PORT" or "http(s)://HOST:PORT" → { host, port, scheme }, or undefined when it is neither. */
export function parseEndpoint(text: string): { host: string; port: number; scheme?: "http" | "https" } | undefined {
  const url = /^(https?):\/\/(\[[0-9a-fA-F:.]+\]|[^:/[\]\s]+):(\d+)\/?$/.exec(text);
  const bare = /^(?:(\[[0-9a-fA-F:.]+\]|[^:/[\]\s]+):)?(\d+)$/.exec(text);
  const [scheme, host, port] = url ? [url[1] as "http" | "https", url[2], url[3]] : bare ? [undefined, bare[1] ?? "127.0.0.1", bare[2]] : [];
  if (port === undefined || host === undefined) return undefined;
  const n = Number(port);
  if (!Number.isInteger(n) || n > 65535) return undefined;
  return { host: host.replace(/^\[|\]$/g, ""), port: n, scheme };
}

export function callMonitor(endpoint: MonitorEndpoint, method: "GET" | "POST", path: string, body?: unknown): Promise<MonitorReply> {
  const url = new URL(path, endpoint.url);
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        headers: { authorization: `Bearer ${endpoint.token}`, ...(payload !== undefined ? { "content-type": "application/json" } : {}) },
        timeout: endpoint.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        ...(endpoint.ca ? { ca: endpoint.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          if ((res.headers["content-type"] ?? "").startsWith("application/json")) {
            try {
              parsed = JSON.parse(text);
            } catch {
              // Left as text.
            }
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer from ${endpoint.url} within ${endpoint.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}
