import { run } from "./process.js";

/** One run of `nbdinfo --map`: its type is base:allocation's flags (0 data, 3 hole and zero). */
export interface MapRun {
  offset: number;
  length: number;
  type: number;
}

/** `nbdinfo --map --json` of an export, with adjacent runs of one type merged (servers may split them anywhere). */
export async function allocationMap(uri: string): Promise<MapRun[]> {
  const merged: MapRun[] = [];
  for (const r of JSON.parse((await run("nbdinfo", ["--map", "--json", uri])).stdout) as MapRun[]) {
    const last = merged[merged.length - 1];
    if (last && last.type === r.type && last.offset + last.length === r.offset) last.length += r.length;
    else merged.push({ offset: r.offset, length: r.length, type: r.type });
  }
  return merged;
}
