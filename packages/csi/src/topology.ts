import type { Volume } from "@keelson/sdk";

/** The zone a node's engine reports (keelsond --zone): what GetCapacity and placement across zones use. */
export const ZONE_TOPOLOGY_KEY = "topology.csi.keelson.io/zone";
/** The node itself: a one-replica volume lives on one node's pool and is reachable only there. */
export const NODE_TOPOLOGY_KEY = "topology.csi.keelson.io/node";

export interface WireTopology {
  segments: Record<string, string>;
}

/** A TopologyRequirement as proto-loader decodes it. */
export interface WireTopologyRequirement {
  requisite?: WireTopology[];
  preferred?: WireTopology[];
}

/** Where a node is: its zone and itself (NodeGetInfo's accessible_topology). */
export function nodeTopology(node: { nodeId: string; zone: string }): WireTopology {
  return { segments: { [ZONE_TOPOLOGY_KEY]: node.zone, [NODE_TOPOLOGY_KEY]: node.nodeId } };
}

/**
 * Where a volume can be used: a cluster volume (replicated, whatever its replica count) anywhere (its
 * frontend runs on whichever node attaches it, its replicas are reached over the network), so no
 * constraint; a plain one-replica volume only on the node whose pool holds it.
 */
export function volumeTopology(v: Pick<Volume, "replicated">, holder: { nodeId: string; zone: string }): WireTopology[] {
  return v.replicated ? [] : [nodeTopology(holder)];
}

/** True when `t` names `node` in every key it sets (a key this driver does not know never matches). */
function matches(t: WireTopology, node: { nodeId: string; zone: string }): boolean {
  const own = nodeTopology(node).segments;
  return Object.entries(t.segments ?? {}).every(([key, value]) => own[key] === value);
}

/**
 * Why a plain one-replica volume on `holder` would break the CO's requirement, or null when it would not: the
 * volume must be accessible from at least one requisite topology.
 */
export function excludedBy(
  req: WireTopologyRequirement | null | undefined,
  holder: { nodeId: string; zone: string },
): string | null {
  // Without a requisite list the spec lets the plugin choose any topology: preferred is a wish.
  const allowed = req?.requisite ?? [];
  if (allowed.length === 0 || allowed.some((t) => matches(t, holder))) return null;
  const asked = allowed.map((t) => JSON.stringify(t.segments)).join(", ");
  return `a one-replica volume lives on the pool of the controller's engine node ${holder.nodeId} (zone ${JSON.stringify(holder.zone)}), which none of the accessibility requirements allows (${asked}); ask for replicas >= 2 or replicated "true" to make it a cluster volume, attachable on any node`;
}
