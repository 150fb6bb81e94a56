import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { parseParameters } from "./parameters.js";

function refusal(parameters: Record<string, string>): string {
  try {
    parseParameters(parameters);
    return "accepted";
  } catch (e) {
    return isKeelsonError(e) ? `${e.code}: ${e.message}` : String(e);
  }
}

describe("StorageClass parameters", () => {
  it("defaults: one replica, ext4, no QoS, no locality; the sidecars' csi.storage.k8s.io/ keys are not the driver's", () => {
    expect(parseParameters({ "csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/fstype": "xfs" })).toEqual({
      replicas: 1,
      replicated: false,
      qosClass: undefined,
      qos: undefined,
      fsType: "ext4",
      mkfsOptions: [],
      dataLocality: "none",
    });
  });

  it("every parameter, with units", () => {
    expect(
      parseParameters({
        replicas: "3",
        replicated: "true",
        qosClass: "gold",
        fsType: "xfs",
        mkfsOptions: "-m reflink=0  -L data",
        dataLocality: "preferred",
        readIopsLimit: "5k",
        writeBytesPerSecLimit: "100M",
        reservationIops: "2000",
        reservationBytesPerSec: "1G",
        weight: "4",
        encryption: "false",
      }),
    ).toEqual({
      replicas: 3,
      replicated: true,
      qosClass: "gold",
      fsType: "xfs",
      mkfsOptions: ["-m", "reflink=0", "-L", "data"],
      dataLocality: "preferred",
      qos: {
        limits: { readIops: { rate: 5000 }, writeBytesPerSec: { rate: 100 * 1024 * 1024 } },
        reservationIops: 2000,
        reservationBytesPerSec: 1024 ** 3,
        weight: 4,
      },
    });
  });

  it("bad values are INVALID_ARGUMENT naming the parameter; unknown keys are refused, not ignored; encryption is reserved", () => {
    expect(refusal({ replica: "3" })).toMatch(/^INVALID_ARGUMENT: StorageClass parameter replica: unknown/);
    expect(refusal({ replicas: "0" })).toMatch(/parameter replicas: a positive integer/);
    expect(refusal({ replicas: "9" })).toMatch(/parameter replicas: at most 5/);
    expect(refusal({ replicas: "two" })).toMatch(/parameter replicas/);
    expect(refusal({ replicated: "yes" })).toMatch(/^INVALID_ARGUMENT: StorageClass parameter replicated: one of true, false/);
    expect(parseParameters({ replicated: "false" }).replicated).toBe(false);
    expect(refusal({ fsType: "btrfs" })).toMatch(/parameter fsType: one of ext4, xfs/);
    expect(refusal({ dataLocality: "always" })).toMatch(/parameter dataLocality: one of none, preferred, required/);
    expect(refusal({ mkfsOptions: "-L x; rm -rf /" })).toMatch(/parameter mkfsOptions: only letters/);
    expect(refusal({ readIopsLimit: "99999999999999999T" })).toMatch(/parameter readIopsLimit: a positive integer below 2\^53/);
    expect(refusal({ qosClass: "Gold Plus" })).toMatch(/parameter qosClass/);
    expect(refusal({ encryption: "true" })).toMatch(/parameter encryption: volumes cannot be encrypted yet/);
  });
});
