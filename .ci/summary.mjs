// Prints one plain closing line for CI from the packages' vitest JSON results.
import fs from "node:fs";

let passed = 0;
let failed = 0;
let skipped = 0;
// The engine runs its multi-node cluster tests in a second vitest run, one file at a time (their
// nodes hold 2 s etcd leases, which lapsed when two clusters shared the 2 cores), and its QoS
// tests in a third, alone, since they measure rates. The conformance suite runs its unit tests,
// then its multi-process tests (whole suite runs against a local cluster) one file at a time. The CSI
// driver's tests (one of them on a 3-node cluster) run one file at a time too.
const expected = [
  "packages/sdk/.vitest-results.json",
  "packages/engine/.vitest-results.json",
  "packages/engine/.vitest-results-cluster.json",
  "packages/engine/.vitest-results-qos.json",
  "packages/engine/.vitest-results-threadpool.json",
  "packages/engine/.vitest-results-direct.json",
  "packages/csi/.vitest-results.json",
  "packages/conformance/.vitest-results.json",
  "packages/conformance/.vitest-results-suite.json",
];
for (const file of expected) {
  if (!fs.existsSync(file)) {
    console.log(`${file} missing: that package's tests did not run`);
    failed++;
    continue;
  }
  const r = JSON.parse(fs.readFileSync(file, "utf8"));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
}
console.log(`Tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
// CI runs on a host with every tool, as root: a skipped or todo test there hid a test that did not run (issue 13).
if (skipped > 0) console.log(`${skipped} skipped or todo: CI does not allow skipping a test`);
process.exit(failed > 0 || skipped > 0 || passed === 0 ? 1 : 0);
