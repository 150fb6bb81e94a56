import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { startDaemon, tempDir } from "./helpers/daemon.js";
import { run } from "./helpers/process.js";

const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../sdk");
const TSC = path.resolve(SDK_DIR, "../../node_modules/typescript/bin/tsc");

describe("the packed @keelson/sdk", () => {
  it("npm pack, installed into a fresh project: imports as ESM with its types and talks to a live engine", async () => {
    using dir = tempDir("keelson-sdk-pack-");
    // The tarball holds the built code, its types and the protos: no sources, no tests.
    const packed = await run("npm", ["pack", "--json", "--pack-destination", dir.path], { cwd: SDK_DIR, timeoutMs: 60_000 });
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as {
      filename: string;
      files: { path: string }[];
    }[];
    const files = (info?.files ?? []).map((f) => f.path);
    expect(files).toContain("dist/index.js");
    expect(files).toContain("dist/index.d.ts");
    expect(files).toContain("proto/keelson/v1/volume.proto");
    expect(files.filter((f) => f.startsWith("src/") || f.endsWith(".test.js"))).toEqual([]);

    const app = path.join(dir.path, "app");
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    // Its dependencies come from the npm cache that `npm ci` just filled (the registry otherwise).
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", path.join(dir.path, info?.filename ?? "")], {
      cwd: app,
      timeoutMs: 180_000,
    });

    await using d = await startDaemon({ poolPath: path.join(dir.path, "pool.img"), poolSize: "128M", dir: dir.path });
    fs.writeFileSync(
      path.join(app, "main.ts"),
      `import { createClient, isKeelsonError, type Volume } from "@keelson/sdk";
import { VolumeServiceService } from "@keelson/sdk/experimental";
await using client = createClient({ address: process.argv[2] as string });
const v: Volume = await client.createVolume({ name: "from-a-package", sizeBytes: 8 * 2 ** 20 });
const missing = await client.getVolume({ name: "nope" }).catch((e: unknown) => (isKeelsonError(e, "VOLUME_NOT_FOUND") ? e.code : "?"));
console.log(JSON.stringify({ name: v.name, size: v.sizeBytes, missing, rpcs: Object.keys(VolumeServiceService).length }));
`,
    );
    // Typechecked as a user's project would be (NodeNext resolution through the exports map), then run.
    await run(
      process.execPath,
      [
        TSC,
        "--module",
        "nodenext",
        "--moduleResolution",
        "nodenext",
        "--target",
        "es2022",
        "--strict",
        "--skipLibCheck",
        "--types",
        "node",
        "--typeRoots",
        path.resolve(SDK_DIR, "../../node_modules/@types"),
        "main.ts",
      ],
      { cwd: app, timeoutMs: 120_000 },
    );
    const out = await run(process.execPath, ["main.js", d.grpcAddress], { cwd: app, timeoutMs: 30_000 });
    const result = JSON.parse(out.stdout) as { name: string; size: number; missing: string; rpcs: number };
    expect(result).toMatchObject({ name: "from-a-package", size: 8 * 2 ** 20, missing: "VOLUME_NOT_FOUND" });
    expect(result.rpcs).toBeGreaterThan(5);
  }, 300_000);
});
