// Each dependency rule of check-imports.mjs fails on a bad import and lets the
// good ones through (node --test scripts/check-imports.test.mjs; run by `npm run lint`).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkSource, engineFolder, importsOf, RULES } from "./check-imports.mjs";

/** The rule ids and specifiers `text` breaks when it is `file`. */
function broken(file, text) {
  return checkSource(file, text).map((v) => `${v.rule} ${v.specifier}`);
}

describe("check-imports", () => {
  test("reads static, type-only, re-export, dynamic and multi-line imports with their lines; comments and strings do not count", () => {
    const text = [
      'import fs from "node:fs";',
      "import {",
      "  a,",
      '} from "./a.js";',
      '// import "./commented.js";',
      'const s = "import \\"./in-a-string.js\\"";',
      'export { b } from "../b.js";',
      'import type { T } from "etcd3";',
      'const m = await import("@keelson/sdk");',
    ].join("\n");
    const found = importsOf("packages/engine/src/x/y.ts", text);
    assert.deepEqual(
      found.map((i) => [i.specifier, i.line, i.resolved]),
      [
        ["node:fs", 1, null],
        ["./a.js", 4, "packages/engine/src/x/a.js"],
        ["../b.js", 7, "packages/engine/src/b.js"],
        ["etcd3", 8, null],
        ["@keelson/sdk", 9, null],
      ],
    );
  });

  test("engineFolder names the folder of an engine source", () => {
    assert.equal(engineFolder("packages/engine/src/store/pool.ts"), "store");
    assert.equal(engineFolder("packages/engine/src/index.ts"), "");
    assert.equal(engineFolder("packages/engine/test/cluster/fencing.test.ts"), null);
  });

  test("etcd-only-in-metadata: etcd3 outside metadata/ fails, inside passes", () => {
    assert.deepEqual(broken("packages/engine/src/cluster/epochs.ts", 'import { Etcd3 } from "etcd3";'), [
      "etcd-only-in-metadata etcd3",
    ]);
    assert.deepEqual(broken("packages/engine/src/control/x.ts", 'import type { Lease } from "etcd3/lib/lease";'), [
      "etcd-only-in-metadata etcd3/lib/lease",
    ]);
    assert.deepEqual(broken("packages/engine/src/metadata/etcd-store.ts", 'import { Etcd3 } from "etcd3";'), []);
  });

  test("store-below-qos: store/ importing qos/ or anything above fails; store, nbd, util and packages pass", () => {
    assert.deepEqual(broken("packages/engine/src/store/pool.ts", 'import { admit } from "../qos/admission.js";'), [
      "store-below-qos ../qos/admission.js",
    ]);
    for (const above of ["target", "replication", "cluster", "control", "daemon", "cli", "metadata"]) {
      assert.deepEqual(broken("packages/engine/src/store/catalog.ts", `import { x } from "../${above}/x.js";`), [
        `store-below-qos ../${above}/x.js`,
      ]);
    }
    const fine = [
      'import { Layer } from "./layer.js";',
      'import { NBD_CMD } from "../nbd/protocol.js";',
      'import { formatBytes } from "../util/size.js";',
      'import { KeelsonError } from "@keelson/sdk";',
      'import fs from "node:fs";',
    ].join("\n");
    assert.deepEqual(broken("packages/engine/src/store/pool.ts", fine), []);
  });

  test("nbd-protocol-only: nbd/ importing store/, qos/ or a package fails; nbd, util, builtins, sdk and debug pass", () => {
    const bad = [
      'import { Pool } from "../store/pool.js";',
      'import type { QosPolicy } from "../qos/policy.js";',
      'import { credentials } from "@grpc/grpc-js";',
    ].join("\n");
    assert.deepEqual(broken("packages/engine/src/nbd/server.ts", bad), [
      "nbd-protocol-only ../store/pool.js",
      "nbd-protocol-only ../qos/policy.js",
      "nbd-protocol-only @grpc/grpc-js",
    ]);
    const fine = [
      'import net from "node:net";',
      'import fs from "fs";',
      'import createDebug from "debug";',
      'import { KeelsonError } from "@keelson/sdk";',
      'import { readOption } from "./handshake.js";',
      'import { jsonLogger } from "../util/log.js";',
    ].join("\n");
    assert.deepEqual(broken("packages/engine/src/nbd/server.ts", fine), []);
  });

  test("local-cluster-drives-processes: local-cluster/ importing the engine's internals fails", () => {
    assert.deepEqual(broken("packages/engine/src/local-cluster/local-cluster.ts", 'import { x } from "../cluster/peers.js";'), [
      "local-cluster-drives-processes ../cluster/peers.js",
    ]);
    const fine = 'import { credentials } from "@grpc/grpc-js";\nimport { sh } from "./host-network.js";';
    assert.deepEqual(broken("packages/engine/src/local-cluster/local-cluster.ts", fine), []);
  });

  test("no-reaching-into-packages: another package's src/ or dist/, relative or through @keelson/, fails", () => {
    assert.deepEqual(broken("packages/conformance/src/target/local.ts", 'import { x } from "../../../engine/src/index.js";'), [
      "no-reaching-into-packages ../../../engine/src/index.js",
    ]);
    assert.deepEqual(
      broken(
        "packages/conformance/test/local-target.test.ts",
        'import { x } from "@keelson/engine/dist/cluster/local-cluster.js";',
      ),
      ["no-reaching-into-packages @keelson/engine/dist/cluster/local-cluster.js"],
    );
    assert.deepEqual(broken("bench/run.mjs", 'const kit = await import("../packages/conformance/dist/fio/index.js");'), [
      "no-reaching-into-packages ../packages/conformance/dist/fio/index.js",
    ]);
    assert.deepEqual(broken("packages/engine/src/x.ts", 'import { KeelsonError } from "@keelson/sdk/src/errors.js";'), [
      "no-reaching-into-packages @keelson/sdk/src/errors.js",
    ]);
    // A package's own tests reach its own sources; everyone else goes through the entry.
    assert.deepEqual(
      broken("packages/engine/test/cluster/fencing.test.ts", 'import { Pool } from "../../src/store/pool.js";'),
      [],
    );
    assert.deepEqual(broken("bench/replication.mjs", 'const { LocalCluster } = await import("@keelson/engine");'), []);
  });

  test("every rule has a test above", () => {
    assert.deepEqual(
      RULES.map((r) => r.id),
      [
        "etcd-only-in-metadata",
        "store-below-qos",
        "nbd-protocol-only",
        "local-cluster-drives-processes",
        "no-reaching-into-packages",
      ],
    );
  });

  test("layering rules leave unit tests beside the code alone (they drive it from above); the package rule does not", () => {
    assert.deepEqual(
      broken("packages/engine/src/store/snapshot-model.test.ts", 'import { x } from "../exports/volume-exports.js";'),
      [],
    );
    assert.deepEqual(broken("packages/engine/src/store/pool.test.ts", 'import { x } from "../../../sdk/dist/index.js";'), [
      "no-reaching-into-packages ../../../sdk/dist/index.js",
    ]);
  });
});
