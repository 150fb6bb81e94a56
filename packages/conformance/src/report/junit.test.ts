import { describe, expect, it } from "vitest";
import { renderJunit } from "./junit.js";
import { sampleReport } from "./sample.js";

interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const NAME = /^[A-Za-z_][\w.-]*/;
const PREDEFINED: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** Decodes character data; throws on a bare "&" or "<", which no well-formed document has. */
function decode(raw: string, where: number): string {
  if (raw.includes("<")) throw new Error(`"<" in character data at ${where}`);
  return raw.replace(/&([^;]*);?/g, (whole, ref: string) => {
    if (!whole.endsWith(";")) throw new Error(`unterminated reference at ${where}`);
    if (ref in PREDEFINED) return PREDEFINED[ref]!;
    const m = /^#(x[0-9a-fA-F]+|[0-9]+)$/.exec(ref);
    if (m === null) throw new Error(`unknown entity &${ref}; at ${where}`);
    return String.fromCodePoint(ref[1] === "x" ? Number.parseInt(ref.slice(2), 16) : Number(ref.slice(1)));
  });
}

/**
 * A strict little XML parser, enough to prove JUnit output well-formed:
 * one root, matched tags, quoted unique attributes, valid references, only
 * XML 1.0 characters. No DTDs, CDATA or comments (the renderer emits none).
 */
function parseXml(xml: string): XmlElement {
  for (const ch of xml) {
    const cp = ch.codePointAt(0)!;
    const ok =
      cp === 9 || cp === 10 || cp === 13 || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000;
    if (!ok) throw new Error(`character U+${cp.toString(16)} is not allowed in XML`);
  }
  let i = xml.startsWith("<?xml") ? xml.indexOf("?>") + 2 : 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  while (i < xml.length) {
    const lt = xml.indexOf("<", i);
    const text = decode(xml.slice(i, lt === -1 ? xml.length : lt), i);
    if (stack.length > 0) stack.at(-1)!.text += text;
    else if (text.trim() !== "") throw new Error(`text outside the root at ${i}`);
    if (lt === -1) break;
    const gt = xml.indexOf(">", lt);
    if (gt === -1) throw new Error(`unclosed tag at ${lt}`);
    const tag = xml.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith("/")) {
      const open = stack.pop();
      if (open?.name !== tag.slice(1).trim()) throw new Error(`</${tag.slice(1)}> closes <${open?.name}> at ${lt}`);
      continue;
    }
    const selfClosing = tag.endsWith("/");
    const body = selfClosing ? tag.slice(0, -1) : tag;
    const name = NAME.exec(body)?.[0];
    if (name === undefined) throw new Error(`bad tag name at ${lt}`);
    const element: XmlElement = { name, attributes: {}, children: [], text: "" };
    let rest = body.slice(name.length);
    while (rest.trim() !== "") {
      const m = /^\s+([A-Za-z_][\w.:-]*)="([^"]*)"/.exec(rest);
      if (m === null) throw new Error(`bad attribute in <${name}> at ${lt}: ${rest.slice(0, 40)}`);
      if (m[1]! in element.attributes) throw new Error(`duplicate attribute ${m[1]} at ${lt}`);
      element.attributes[m[1]!] = decode(m[2]!, lt);
      rest = rest.slice(m[0].length);
    }
    if (stack.length > 0) stack.at(-1)!.children.push(element);
    else if (root === undefined) root = element;
    else throw new Error(`second root element at ${lt}`);
    if (!selfClosing) stack.push(element);
  }
  if (stack.length > 0 || root === undefined) throw new Error("unclosed elements at end of document");
  return root;
}

function child(element: XmlElement, name: string): XmlElement | undefined {
  return element.children.find((c) => c.name === name);
}

describe("parseXml (the test's own checker)", () => {
  it("rejects what is not well-formed", () => {
    expect(() => parseXml("<a><b></a></b>")).toThrow(/closes/);
    expect(() => parseXml('<a x="1 & 2"/>')).toThrow(/unterminated|unknown/);
    expect(() => parseXml("<a>\u0007</a>")).toThrow(/not allowed/);
    expect(() => parseXml("<a/><b/>")).toThrow(/second root/);
  });
});

describe("renderJunit", () => {
  const report = sampleReport();
  const root = parseXml(renderJunit(report));

  it("is well-formed, with totals matching the report's summary", () => {
    expect(root.name).toBe("testsuites");
    expect(root.attributes.tests).toBe(String(report.checks.length));
    expect(root.attributes.failures).toBe(String(report.summary.fail));
    expect(root.attributes.errors).toBe(String(report.summary.error));
    expect(root.attributes.skipped).toBe(String(report.summary.notApplicable));
  });

  it("a testsuite per family, a testcase per check with the family's classname", () => {
    const suites = root.children.filter((c) => c.name === "testsuite");
    expect(suites.map((s) => s.attributes.name)).toEqual([
      "keelson-conformance.ha",
      "keelson-conformance.qos",
      "keelson-conformance.latency",
      "keelson-conformance.snapshot",
    ]);
    const cases = suites.flatMap((s) => s.children.filter((c) => c.name === "testcase"));
    expect(cases.map((c) => c.attributes.name)).toEqual(report.checks.map((c) => c.id));
    for (const [i, c] of cases.entries()) expect(c.attributes.classname).toBe(`keelson-conformance.${report.checks[i]!.family}`);
  });

  it("fail -> <failure>, error -> <error>, not-applicable -> <skipped> with the reason; messages read back whole", () => {
    const cases = new Map(
      root.children.flatMap((s) => s.children.filter((c) => c.name === "testcase")).map((c) => [c.attributes.name, c]),
    );
    expect(child(cases.get("ha.replica-loss")!, "failure")).toBeUndefined();
    const failure = child(cases.get("ha.partition")!, "failure")!;
    expect(failure.text).toBe(`[known failure keelson#412] ${report.checks[1]!.message}`);
    const error = child(cases.get("qos.burst-credit")!, "error")!;
    // The message holds markup, quotes and ANSI codes: the markup reads back, the ANSI codes are gone.
    expect(error.text).toBe(report.checks[3]!.message.replaceAll("\x1b[31m", "").replaceAll("\x1b[0m", ""));
    expect(error.attributes.message).toBe(`fio exited 1: <script>alert("x")</script> & 'quoted' output`);
    expect(child(cases.get("snapshot.crash-consistency")!, "skipped")!.attributes.message).toBe(
      "The target lacks the capability snapshot.",
    );
  });

  it("system-out lists the figures with units and thresholds", () => {
    const testcase = root.children[0]!.children.find((c) => c.attributes.name === "ha.replica-loss")!;
    const out = child(testcase, "system-out")!.text.split("\n");
    expect(out).toContain("stallMs = 2,450 ms (threshold ≤ 5,000 ms) [pass]");
    expect(out).toContain("iopsAfterRecovery = 11,872 IOPS [info]");
    expect(out.some((l) => l.startsWith("series iops: 60 points of 1000 ms, 1 stall(s) totalling 2.5 s"))).toBe(true);
  });

  it("control characters in a message are replaced, keeping the document well-formed", () => {
    const r = sampleReport();
    r.checks[1]!.message = "bad\u0000byte\u001b and \ud800 lone";
    const failure = child(
      parseXml(renderJunit(r)).children[0]!.children.find((c) => c.attributes.name === "ha.partition")!,
      "failure",
    )!;
    expect(failure.text).toBe("[known failure keelson#412] bad\ufffdbyte\ufffd and \ufffd lone");
  });
});
