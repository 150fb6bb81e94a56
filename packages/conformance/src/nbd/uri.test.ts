import { describe, expect, it } from "vitest";
import { ConformanceError } from "../errors.js";
import { DEFAULT_NBD_PORT, formatNbdUri, type NbdAddress, parseNbdUri } from "./uri.js";

describe("parseNbdUri", () => {
  it.each<[string, NbdAddress]>([
    ["nbd://node1/vol-a", { transport: "tcp", host: "node1", port: DEFAULT_NBD_PORT, exportName: "vol-a" }],
    ["nbd://10.0.0.7:10900/vol%20b", { transport: "tcp", host: "10.0.0.7", port: 10900, exportName: "vol b" }],
    ["nbd://[::1]:10809/x", { transport: "tcp", host: "::1", port: 10809, exportName: "x" }],
    ["nbd://host", { transport: "tcp", host: "host", port: DEFAULT_NBD_PORT, exportName: "" }],
    [
      "nbd+unix:///vol?socket=/run/keelson/a+b.sock",
      { transport: "unix", socketPath: "/run/keelson/a+b.sock", exportName: "vol" },
    ],
    ["nbd+unix:///?socket=%2Ftmp%2Fs.sock", { transport: "unix", socketPath: "/tmp/s.sock", exportName: "" }],
  ])("%s", (uri, expected) => {
    const parsed = parseNbdUri(uri);
    expect(parsed).toEqual(expected);
    expect(parseNbdUri(formatNbdUri(parsed))).toEqual(parsed);
  });

  it.each([
    ["nbds://host/vol", /scheme "nbds"/],
    ["http://host/vol", /scheme "http"/],
    ["/dev/nbd0", /is not a URI/],
    ["nbd://host:0/vol", /port 0/],
    ["nbd://host/vol?tls=1", /query parameters/],
    ["nbd+unix:///vol", /no socket=/],
    ["nbd+unix://host/vol?socket=/s", /names host "host"/],
    ["nbd+unix:///vol?socket=/s&x=1", /parameters x/],
    ["nbd://host/vol#frag", /fragment/],
    [`nbd://host/${"n".repeat(5000)}`, /longer than 4096 bytes/],
  ])("refuses %s with INVALID_ARGUMENT listing the valid forms", (uri, why) => {
    let error: unknown;
    try {
      parseNbdUri(uri);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConformanceError);
    expect((error as ConformanceError).code).toBe("INVALID_ARGUMENT");
    expect((error as Error).message).toMatch(why);
    expect((error as Error).message).toContain("nbd://host[:port]/export, nbd+unix:///export?socket=/path");
  });
});
