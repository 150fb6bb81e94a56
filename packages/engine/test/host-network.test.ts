import fs from "node:fs";
import { describe, expect, it } from "vitest";
import { addNodeNamespace, createNetwork, type HostNetwork, removeNetwork, sh } from "../src/local-cluster/host-network.js";
import { canRun } from "./helpers/env.js";

const needs = { root: true, tools: ["ip"] };
const macOf = (dev: string) => fs.readFileSync(`/sys/class/net/${dev}/address`, "utf8").trim();

describe("local cluster network", () => {
  // A bridge without an address of its own takes the lowest of its ports' addresses, so it changed
  // whenever a node joining later had a lower one. The nodes already running still sent to the old
  // address; frames were lost until their ARP entries were renewed, and their TCP connections to
  // etcd (on the bridge) stalled in retransmission backoff. In CI a node's liveness lease lapsed
  // seconds after it started, and operations needing every replica saw it down.
  it("the bridge keeps the address it was created with while ports join it, even one with a lower address", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    let net: HostNetwork | null = null;
    const extra = `kvx${process.pid % 100_000}`;
    try {
      net = await createNetwork();
      const created = macOf(net.bridge);
      expect(Number.parseInt(created.slice(0, 2), 16) & 0x03, "locally administered, unicast").toBe(0x02);
      await addNodeNamespace(net, 0);
      // The lowest unicast address there is: a bridge that follows its ports would take it.
      await sh("ip", ["link", "add", extra, "address", "00:00:00:00:00:01", "type", "veth", "peer", "name", `${extra}p`]);
      await sh("ip", ["link", "set", extra, "master", net.bridge]);
      await sh("ip", ["link", "set", extra, "up"]);
      await addNodeNamespace(net, 1);
      expect(macOf(net.bridge), "the gateway the nodes resolved is still the bridge's address").toBe(created);
      // 3 = NET_ADDR_SET: set explicitly, so the kernel no longer derives it from the ports.
      expect(fs.readFileSync(`/sys/class/net/${net.bridge}/addr_assign_type`, "utf8").trim()).toBe("3");
    } finally {
      await sh("ip", ["link", "del", extra]).catch(() => undefined);
      if (net) expect(await removeNetwork(net, 2)).toEqual([]);
    }
  });

  it("two networks get different bridge addresses", async (t) => {
    if (!canRun(needs, t.task.name)) return t.skip();
    const nets: HostNetwork[] = [];
    try {
      nets.push(await createNetwork(), await createNetwork());
      const [a, b] = nets.map((n) => macOf(n.bridge));
      expect(a).not.toBe(b);
    } finally {
      for (const n of nets) expect(await removeNetwork(n, 0)).toEqual([]);
    }
  });
});
