import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import type { LogLevel } from "../util/log.js";
import { checkControlListen, isLoopbackAddress } from "./listen-policy.js";

describe("isLoopbackAddress", () => {
  it("unix sockets, localhost, 127.0.0.0/8 and ::1 are loopback", () => {
    for (const a of ["unix:/run/k.sock", "localhost:7420", "127.0.0.1:7420", "127.0.0.12:0", "[::1]:7420", "::1:7420"]) {
      expect(isLoopbackAddress(a), a).toBe(true);
    }
  });

  it("any other address or name is not", () => {
    for (const a of ["0.0.0.0:7420", "10.201.7.11:7420", "[::]:7420", "node1.example:7420", "128.0.0.1:1", "[fe80::1]:1"]) {
      expect(isLoopbackAddress(a), a).toBe(false);
    }
  });
});

describe("checkControlListen", () => {
  const warnings: string[] = [];
  const log = { log: (level: LogLevel, message: string) => void (level === "warn" && warnings.push(message)) };

  it("refuses a non-loopback address without TLS with INVALID_ARGUMENT naming it and the ways out", () => {
    try {
      checkControlListen({ address: "0.0.0.0:7420", tls: false, insecure: false, callerCheck: "none", log });
      expect.unreachable();
    } catch (error) {
      expect(isKeelsonError(error, "INVALID_ARGUMENT")).toBe(true);
      expect(String(error)).toMatch(/0\.0\.0\.0:7420 without TLS.*--tls-client-ca.*--insecure/);
    }
  });

  it("--insecure serves it with a warning; TLS without a client CA warns too; loopback and mutual TLS are quiet", () => {
    warnings.length = 0;
    checkControlListen({ address: "10.0.0.1:7420", tls: false, insecure: true, callerCheck: "none", log });
    checkControlListen({ address: "10.0.0.1:7420", tls: true, insecure: false, callerCheck: "none", log });
    expect(warnings).toHaveLength(2);
    checkControlListen({ address: "10.0.0.1:7420", tls: true, insecure: false, callerCheck: "certificate-role", log });
    checkControlListen({ address: "127.0.0.1:7420", tls: false, insecure: false, callerCheck: "none", log });
    expect(warnings).toHaveLength(2);
  });
});
