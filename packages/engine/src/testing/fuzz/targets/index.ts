import type { FuzzTarget } from "../target.js";
import { nbdHandshake } from "./nbd-handshake.js";

/** Every fuzz target by name. */
export const TARGETS: ReadonlyMap<string, FuzzTarget> = new Map([nbdHandshake].map((t) => [t.name, t]));
