// Deliberately broken targets for the families' negative tests: the real
// local target with some methods replaced, and the report lines they print.

import path from "node:path";
import { formatValue } from "../../src/checks/judge.js";
import type { CheckResult } from "../../src/report/types.js";
import type { AttachedVolume, AttachRequest, Target } from "../../src/target/target.js";
import { LossyNbdProxy, type LossyNbdProxyOptions } from "../../src/testing/lossy-nbd-proxy.js";

/** Delegates to `real` except where `overrides` says otherwise (methods keep `real` as `this`). */
export function broken(real: Target, overrides: Partial<Record<keyof Target, unknown>>): Target {
  return new Proxy(real, {
    get(target, property) {
      if (property in overrides) return overrides[property as keyof Target];
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/**
 * An `attach` that serves every attachment of `real` through an NBD proxy
 * (dropping or delaying as `behaviour` says), detached with it; the proxies
 * made go into `proxies`.
 */
export function attachThroughProxy(
  real: Target,
  dir: string,
  behaviour: Omit<LossyNbdProxyOptions, "upstreamUri" | "socketPath">,
  proxies: LossyNbdProxy[],
): (request: AttachRequest) => Promise<AttachedVolume> {
  return async (request) => {
    const attached = await real.attach(request);
    if (attached.dataPath.kind !== "nbd") {
      await attached.detach();
      throw new Error(`expected an NBD attach, got ${attached.dataPath.kind}`);
    }
    const proxy = await LossyNbdProxy.start({
      upstreamUri: attached.dataPath.uri,
      socketPath: path.join(dir, `proxy-${proxies.length}.sock`),
      ...behaviour,
    });
    proxies.push(proxy);
    return {
      ...attached,
      dataPath: { kind: "nbd", uri: proxy.uri },
      detach: async () => {
        await proxy.close();
        await attached.detach();
      },
    };
  };
}

/** One line per figure, for the log: the figures are the point of the suite. */
export function printResults(results: readonly CheckResult[], header: string[] = []): void {
  const lines = [...header];
  for (const r of results) {
    lines.push(`${r.id}: ${r.verdict}${r.message ? ` - ${r.message}` : ""}`);
    for (const f of r.figures) {
      const bound = f.threshold ? ` [${f.threshold.min ?? ""}..${f.threshold.max ?? ""}]` : "";
      lines.push(`  ${f.name.padEnd(40)} ${formatValue(f.value).padStart(10)} ${f.unit}${bound} ${f.verdict}`);
    }
  }
  console.log(lines.join("\n"));
}
