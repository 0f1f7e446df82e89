// The monitor page in a real browser (headless Chromium from the system, driven by
// playwright-core) during real two-process migrations: the progress rises monotonically to
// 100 %, the rounds chart gains points, the machine view shows the registers the hypervisor
// reads; cancel from the page leaves the guest running on the source; post-copy from the page
// completes with the digest of a run never migrated. Saves docs/monitor.png and
// docs/monitor-machine.png.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CLI, Destination, killChildren, testToken } from "../migrate-harness.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
// A token strong enough for the listener, as the harness makes it from a name.
const TOKEN_NAME = "browser-test-token";
const TOKEN = testToken(TOKEN_NAME);

let context: BrowserContext;
let profile: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install the Debian package chromium (apt-get install -y chromium)`);
  profile = mkdtempSync(join(tmpdir(), "blmv-chromium-"));
  context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1280, height: 1000 } });
});

afterAll(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

const sources = new Set<ChildProcess>();
afterEach(() => {
  for (const s of sources) if (s.exitCode === null) s.kill("SIGKILL");
  sources.clear();
  killChildren();
});

/** `blmv migrate send --http 0 --verify …` to `dest`; resolves once its monitor is up, with its page address. */
async function send(dest: Destination, args: string[]): Promise<{ page: string; exit: Promise<{ code: number | null; stdout: string }> }> {
  const child = spawn(process.execPath, [CLI, "migrate", "send", "--to", dest.url, "--http", "0", "--verify", ...args], { env: { ...process.env, BLMV_TOKEN: TOKEN }, stdio: ["ignore", "pipe", "pipe"] });
  sources.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  const exit = new Promise<{ code: number | null; stdout: string }>((r) => child.on("close", (code) => r({ code, stdout })));
  const page = await new Promise<string>((resolve, reject) => {
    child.stderr!.on("data", (d) => {
      stderr += d;
      const m = /monitor: (http:\/\/\S+#token=\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    void exit.then(({ code }) => reject(new Error(`send exited (${code}) before its monitor started: ${stderr}`)));
  });
  return { page, exit };
}

/** Opens the page and records every progress value it shows, and the rounds chart's point counts. */
async function open(url: string): Promise<Page> {
  const page = await context.newPage();
  await page.addInitScript(() => {
    const w = window as unknown as { seenProgress: number[]; seenPoints: number[] };
    w.seenProgress = [];
    w.seenPoints = [];
    const record = (): void => {
      const bar = document.getElementById("progress");
      const chart = document.getElementById("rounds-chart");
      if (bar) w.seenProgress.push(Number(bar.getAttribute("aria-valuenow")));
      if (chart) w.seenPoints.push(Number(chart.dataset.points));
    };
    document.addEventListener("DOMContentLoaded", () => {
      new MutationObserver(record).observe(document.body, { subtree: true, attributes: true, childList: true, characterData: true });
    });
  });
  await page.goto(url);
  // The token left the address bar for a cookie.
  await page.waitForFunction(() => location.hash === "" && document.getElementById("feed")?.textContent === "live");
  return page;
}

async function outcome(page: Page): Promise<string> {
  await page.locator("#outcome").waitFor({ state: "visible", timeout: 150_000 });
  return page.locator("#outcome-status").innerText();
}

describe("the monitor page in Chromium", () => {
  it("follows a migration to the end: progress only rises, to 100 %; the chart grows; the machine view shows the hypervisor's registers; the listener lists the session", async () => {
    const dest = await Destination.start(TOKEN_NAME, ["--http", "0"]);
    const { page: url, exit } = await send(dest, ["--memory", "16M", "--workload", "uniform", "--working-set", "4M", "--dirty-rate", "8M", "--bandwidth", "6M", "--downtime-limit", "40", "--migrate-after", "1.5", "--duration", "12"]);
    const page = await open(url);
    expect(await page.locator("#role").innerText()).toBe("source");

    // The machine while the guest runs: the registers the hypervisor reads, refreshed.
    await page.click('#tabs [data-view="machine"]');
    await page.waitForFunction(() => (document.getElementById("lapic")?.textContent ?? "").includes("initialCount"));
    const firstTime = await page.locator("#machine-time").innerText();
    await expect.poll(() => page.locator("#machine-time").innerText(), { timeout: 10_000 }).not.toBe(firstTime);
    const lapic = await page.locator("#lapic").innerText();
    expect(lapic).toMatch(/LVT timer\s+0x2[0-9a-f]{4}/);
    expect(await page.locator("#pic").innerText()).toMatch(/icw2\s+0x20\s+0x28/);
    expect(await page.locator("#ioapic tr").count()).toBe(25);
    expect(await page.locator("#pit tr").count()).toBe(4);
    expect(await page.locator("#exits-port").innerText()).toContain("0x20");
    await page.screenshot({ path: "docs/monitor-machine.png", fullPage: true });
    await page.click('#tabs [data-view="migration"]');

    expect(await outcome(page)).toBe("completed");
    await expect.poll(() => page.locator("#outcome-digest").getAttribute("data-verdict"), { timeout: 60_000 }).toBe("identical");
    const seen = await page.evaluate(() => (window as unknown as { seenProgress: number[] }).seenProgress);
    for (let i = 1; i < seen.length; i++) expect(seen[i], `progress step ${i}`).toBeGreaterThanOrEqual(seen[i - 1]);
    expect(seen.at(-1)).toBe(100);
    expect(new Set(seen).size).toBeGreaterThan(3);
    const points = await page.evaluate(() => (window as unknown as { seenPoints: number[] }).seenPoints);
    expect(Math.max(...points)).toBeGreaterThanOrEqual(3);
    expect(new Set(points.filter((p) => p > 0)).size).toBeGreaterThanOrEqual(2);
    expect(await page.locator("#outcome-predicted").innerText()).toMatch(/rounds, downtime/);
    await page.screenshot({ path: "docs/monitor.png", fullPage: true });
    expect((await exit).code).toBe(0);

    // The destination's page lists the session, finished with the guest's final digest.
    const monitor = (await dest.waitFor((e) => (e as { event: string }).event === "monitor")) as unknown as { url: string };
    const listener = await open(`${monitor.url}#token=${TOKEN}`);
    expect(await listener.locator("#role").innerText()).toBe("destination");
    await listener.waitForFunction(() => (document.querySelector("#sessions tbody")?.textContent ?? "").includes("finished"));
    expect(await listener.locator("#sessions tbody tr").count()).toBe(1);
    expect(await listener.locator("#sessions tbody").innerText()).toMatch(/uniform.*digest [0-9a-f]{64}/s);
  });

  it("cancels from the page: the guest keeps running on the source", async () => {
    const dest = await Destination.start(TOKEN_NAME);
    // A limit of 1 ms is not met while the guest dirties memory, and the first round alone
    // takes 8 s: pre-copy is running when the page cancels it.
    const { page: url, exit } = await send(dest, ["--memory", "8M", "--working-set", "6M", "--dirty-rate", "16M", "--bandwidth", "1M", "--downtime-limit", "1", "--migrate-after", "1", "--duration", "6"]);
    const page = await open(url);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "active");
    await page.click("#cancel");
    await expect.poll(() => page.locator("#control-message").innerText()).toMatch(/cancelling/);
    expect(await outcome(page)).toBe("cancelled");
    expect(await page.locator("#outcome-guest").innerText()).toBe("source");
    const { code, stdout } = await exit;
    expect(code).toBe(1);
    expect(stdout).toMatch(/cancelled before the commit: the guest keeps running on the source/);
    expect(stdout).toMatch(/the guest ran on to 6\.000 s virtual on the source/);
    expect(stdout).toMatch(/verification +identical to the run that was never migrated/);
  });

  it("switches to post-copy from the page: it completes with the right digest", async () => {
    const dest = await Destination.start(TOKEN_NAME);
    const { page: url, exit } = await send(dest, ["--memory", "8M", "--working-set", "6M", "--dirty-rate", "16M", "--bandwidth", "2M", "--downtime-limit", "1", "--migrate-after", "1", "--duration", "8"]);
    const page = await open(url);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "active");
    await page.click("#postcopy");
    await expect.poll(() => page.locator("#control-message").innerText()).toMatch(/post-copy starts/);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "postcopy-active" || !document.getElementById("outcome")!.hidden);
    expect(await outcome(page)).toBe("completed");
    await expect.poll(() => page.locator("#outcome-digest").getAttribute("data-verdict"), { timeout: 60_000 }).toBe("identical");
    const { code, stdout } = await exit;
    expect(code).toBe(0);
    expect(stdout).toMatch(/pre-copy stopped on postcopy-requested/);
  });
});
