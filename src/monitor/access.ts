// Who may use the monitor: a request must name this server in its Host header (so a name that
// resolves here by a trick — DNS rebinding — gets nothing), carry the migration's token (as a
// bearer token, or as the cookie the page gets for it), and a control must come from this
// server's own page or from no page at all (Origin), so another web page open in the same
// browser cannot drive it. See docs/monitor.md (security).

import { createHmac, timingSafeEqual } from "node:crypto";
import { hostname } from "node:os";
import { isIP } from "node:net";
import type { IncomingMessage } from "node:http";

export class Access {
  readonly cookieName: string;
  private readonly cookieValue: string;
  private readonly names: Set<string>;
  private readonly anyAddress: boolean;

  constructor(
    private readonly token: string,
    bindHost: string,
    readonly port: number,
    readonly tls: boolean,
  ) {
    // One cookie per port: a browser shares cookies between the ports of a host.
    this.cookieName = `blmv-monitor-${port}`;
    this.cookieValue = derive(token, "page cookie");
    const host = bindHost.toLowerCase();
    this.anyAddress = host === "0.0.0.0" || host === "::" || host === "";
    this.names = new Set(["localhost", "127.0.0.1", "[::1]", isIP(host) === 6 ? `[${host}]` : host, ...(this.anyAddress ? [hostname().toLowerCase()] : [])]);
  }

  /** Why the Host header is not this server's, or undefined when it is. */
  hostProblem(req: IncomingMessage): string | undefined {
    const header = (req.headers.host ?? "").toLowerCase();
    const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+):(\d+)$/.exec(header);
    if (!m || Number(m[2]) !== this.port) return `Host ${JSON.stringify(header)} is not this server`;
    const name = m[1];
    if (this.names.has(name)) return undefined;
    // Bound to every address: any address of this host is fine, a foreign name is not.
    if (this.anyAddress && isIP(name.replace(/^\[|\]$/g, "")) !== 0) return undefined;
    return `Host ${JSON.stringify(header)} is not a name of this server`;
  }

  /** Why a state-changing request may come from a foreign page, or undefined when it cannot. */
  originProblem(req: IncomingMessage): string | undefined {
    const origin = req.headers.origin;
    if (req.headers["sec-fetch-site"] === "cross-site") return "a request from another site";
    if (origin === undefined) return undefined;
    const own = `${this.tls ? "https" : "http"}://${(req.headers.host ?? "").toLowerCase()}`;
    return origin.toLowerCase() === own ? undefined : `Origin ${JSON.stringify(origin)} is not this server's page`;
  }

  /** Whether the request carries the token (bearer) or the page's cookie. */
  authenticated(req: IncomingMessage): boolean {
    const auth = req.headers.authorization;
    if (auth?.startsWith("Bearer ")) return this.bearer(auth.slice(7).trim());
    const cookie = cookies(req.headers.cookie)[this.cookieName];
    return cookie !== undefined && same(cookie, this.cookieValue);
  }

  bearer(token: string): boolean {
    return same(derive(token, "bearer"), derive(this.token, "bearer"));
  }

  /** The Set-Cookie header that lets the page in after it has shown the token once. */
  cookie(): string {
    return `${this.cookieName}=${this.cookieValue}; Path=/; HttpOnly; SameSite=Strict${this.tls ? "; Secure" : ""}`;
  }
}

/** A value derived from the token: the token itself is never stored in the browser. */
function derive(token: string, purpose: string): string {
  return createHmac("sha256", token).update(`blmv-monitor ${purpose}`).digest("base64url");
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function cookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? "").split(";")) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}
