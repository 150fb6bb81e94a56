import { afterEach } from "vitest";
import type { StartedLocalCluster } from "../../src/local-cluster/local-cluster.js";

/**
 * Stops the clusters a test started after it, even when it timed out (a
 * timeout skips `await using`), and prints their log tails when it failed:
 * the logs are removed with the cluster's directory.
 */
export function trackClusters(): (cluster: StartedLocalCluster) => StartedLocalCluster {
  const live = new Set<StartedLocalCluster>();
  afterEach(async (ctx) => {
    const failed = ctx.task.result?.state === "fail" || (ctx.task.result?.errors?.length ?? 0) > 0;
    for (const c of live) {
      if (failed) console.error(`logs of the failed test's cluster in ${c.state.dir}:\n${c.logTails(60)}`);
      await c.stop().catch((e: unknown) => console.error(`cluster teardown: ${String(e)}`));
    }
    live.clear();
  });
  return (cluster) => {
    live.add(cluster);
    return cluster;
  };
}
