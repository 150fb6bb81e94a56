// qos.limit-accuracy sets each limit with an explicit burst, so a target's
// own default bucket neither fails nor passes it by chance.

import { describe, expect, it, vi } from "vitest";
import type { QosSpec, RateSpec } from "../../target/target.js";
import { fakeContext } from "../common/fake-context.js";
import { FakeFio } from "../common/fake-fio.js";

const fio = new FakeFio();
vi.mock("./load.js", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./load.js")>()),
  runLoad: (...args: Parameters<FakeFio["runLoad"]>) => fio.runLoad(...args),
  // The real prefill calls fio inside load.ts, past the mock.
  prefill: async () => undefined,
}));
const { limitAccuracy } = await import("./limit-accuracy.js");

const MIB = 1024 * 1024;

describe("qos.limit-accuracy", () => {
  it("every limit is set with a burst of a tenth of a second's worth (at least one IO), and the first second is left out", async () => {
    const specs: QosSpec[] = [];
    const ctx = fakeContext({
      provision: async (request) => ({ name: request.name, sizeBytes: request.sizeBytes, replicas: request.replicas }),
      setQos: async (_volume, qos) => {
        specs.push(qos);
      },
      attach: async (request) => ({
        volume: request.volume,
        nodeId: "n1",
        dataPath: { kind: "nbd", uri: "nbd+unix:///x?socket=/nowhere" },
        detach: async () => undefined,
      }),
    });
    await limitAccuracy.run(ctx);
    const limits = specs.flatMap((s) => Object.entries(s) as [keyof QosSpec, RateSpec][]);
    expect(limits.map(([key]) => key).sort()).toEqual(
      ["readBytesPerSec", "readIops", "totalIops", "writeBytesPerSec", "writeIops"].sort(),
    );
    for (const [key, spec] of limits) {
      const oneIo = key.endsWith("BytesPerSec") ? MIB : 1;
      expect(spec.burst, key).toBe(Math.max(oneIo, Math.ceil(spec.rate / 10)));
    }
    for (const job of fio.started.filter((j) => j.name.endsWith("-limited"))) expect(job.rampS, job.name).toBe(1);
  });
});
