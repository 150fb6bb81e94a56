import type { TestDaemon } from "./daemon.js";

/** One Prometheus scrape of the daemon: `name{labels}` to value. */
export async function scrape(d: TestDaemon): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${d.metricsAddress}/metrics`)).text();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}
