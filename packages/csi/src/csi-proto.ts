import path from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

/** Where csi.proto (CSI spec v1.12.0, package csi.v1) lies: shipped with the package, next to dist/. */
export const CSI_PROTO_DIR = fileURLToPath(new URL("../proto", import.meta.url));
export const CSI_PROTO_FILE = path.join(CSI_PROTO_DIR, "csi", "v1", "csi.proto");
/** The CSI specification version csi.proto follows. */
export const CSI_SPEC_VERSION = "1.12.0";

/**
 * csi.proto (or another copy of it, for tests) as protobufjs reflection (services, messages, enums with their options), resolved. The
 * google/protobuf imports come from protobufjs's bundled copies: nothing is fetched.
 */
export async function loadCsiRoot(file: string = CSI_PROTO_FILE): Promise<protobuf.Root> {
  const root = new protobuf.Root();
  // protobufjs has timestamp and wrappers built in, and ships descriptor.proto (for the custom options) as a file.
  const bundled = path.dirname(fileURLToPath(import.meta.resolve("protobufjs/package.json")));
  root.resolvePath = (origin, target) =>
    target === "google/protobuf/descriptor.proto" ? path.join(bundled, target) : protobuf.util.path.resolve(origin, target);
  await root.load(file, { keepCase: true });
  root.resolveAll();
  return root;
}
