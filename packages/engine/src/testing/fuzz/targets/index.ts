import type { FuzzTarget } from "../target.js";
import { controlRequests } from "./control-requests.js";
import { nbdHandshake } from "./nbd-handshake.js";
import { nbdTransmission } from "./nbd-transmission.js";

/** Every fuzz target by name. */
export const TARGETS: ReadonlyMap<string, FuzzTarget> = new Map(
  [nbdHandshake, nbdTransmission, controlRequests].map((t) => [t.name, t]),
);
