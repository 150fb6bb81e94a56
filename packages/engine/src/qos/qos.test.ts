import { isKeelsonError } from "@keelson/sdk";
import { describe, expect, it } from "vitest";
import { admit, type DiskCapability } from "./admission.js";
import { DiskScheduler, type ScheduledIo } from "./disk-scheduler.js";
import { parseQosClasses, validatePolicy } from "./policy.js";
import { TokenBucket } from "./token-bucket.js";
import { type Clock, VolumeThrottle } from "./volume-throttle.js";

/** Simulated time: timers fire in order as the test advances the clock. */
class FakeClock implements Clock {
  now = 0;
  #timers: Array<{ at: number; fn: () => void; live: boolean }> = [];

  nowMs(): number {
    return this.now;
  }

  after(ms: number, fn: () => void): () => void {
    const t = { at: this.now + ms, fn, live: true };
    this.#timers.push(t);
    return () => {
      t.live = false;
    };
  }

  /** Moves time to `to`, firing due timers in time order. */
  advanceTo(to: number): void {
    for (;;) {
      const due = this.#timers.filter((t) => t.live && t.at <= to).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.now = Math.max(this.now, due.at);
      due.live = false;
      due.fn();
    }
    this.#timers = this.#timers.filter((t) => t.live);
    this.now = to;
  }
}

describe("TokenBucket", () => {
  it("passes a burst, then the rate; a request larger than the bucket passes and leaves debt", () => {
    const b = new TokenBucket(1000, 5000, 0);
    let passed = 0;
    while (b.waitMs(0) === 0) {
      b.take(1);
      passed++;
    }
    expect(passed).toBe(5001); // the bucket is taken into debt by the last one
    expect(b.waitMs(0)).toBeCloseTo(1, 5);
    const big = new TokenBucket(100, 10, 0);
    expect(big.waitMs(0)).toBe(0);
    big.take(1000); // 100x the bucket: passes, never starved
    expect(big.waitMs(0)).toBeCloseTo(9_900, 5); // 990 tokens of debt at 100/s
    expect(big.waitMs(9_900)).toBe(0);
  });
});

describe("VolumeThrottle on simulated time", () => {
  /** Runs a closed loop of `depth` I/Os for `seconds` and counts completions per second. */
  function closedLoop(throttle: VolumeThrottle, clock: FakeClock, depth: number, seconds: number, bytes = 4096) {
    const perSecond = new Array<number>(seconds).fill(0);
    const issue = (): void => {
      throttle.submit({
        write: false,
        bytes,
        start: () => {
          const second = Math.floor(clock.now / 1000);
          if (second < seconds) perSecond[second] = (perSecond[second] ?? 0) + 1;
          // The I/O takes 0.1 ms; the next one is issued when it completes.
          clock.after(0.1, issue);
        },
      });
    };
    for (let i = 0; i < depth; i++) issue();
    for (let t = 1; t <= seconds * 1000; t++) clock.advanceTo(t);
    return perSecond;
  }

  it("holds a 2,000 IOPS limit within 5% every second", () => {
    const clock = new FakeClock();
    const t = new VolumeThrottle({ totalIops: { rate: 2000 } }, clock);
    const perSecond = closedLoop(t, clock, 32, 5);
    for (const n of perSecond.slice(1)) expect(Math.abs(n - 2000) / 2000).toBeLessThan(0.05);
    expect(t.delayedIos).toBeGreaterThan(0);
    expect(t.throttledMs).toBeGreaterThan(4000);
  });

  it("burst: rate 1,000 and bucket 5,000 give about 6,000 IOs in the first second, then 1,000/s", () => {
    const clock = new FakeClock();
    const t = new VolumeThrottle({ readIops: { rate: 1000, burst: 5000 } }, clock);
    const perSecond = closedLoop(t, clock, 32, 4);
    expect(Math.abs((perSecond[0] as number) - 6000) / 6000).toBeLessThan(0.05);
    for (const n of perSecond.slice(1)) expect(Math.abs(n - 1000) / 1000).toBeLessThan(0.05);
  });

  it("bytes/s: 1 MiB writes under a 50 MiB/s limit run at 50 a second", () => {
    const clock = new FakeClock();
    const t = new VolumeThrottle({ writeBytesPerSec: { rate: 50 * 2 ** 20 } }, clock);
    const perSecond = new Array<number>(4).fill(0);
    const issue = (): void => {
      t.submit({
        write: true,
        bytes: 2 ** 20,
        start: () => {
          const s = Math.floor(clock.now / 1000);
          if (s < 4) perSecond[s] = (perSecond[s] ?? 0) + 1;
          clock.after(1, issue);
        },
      });
    };
    for (let i = 0; i < 8; i++) issue();
    for (let ms = 1; ms <= 4000; ms++) clock.advanceTo(ms);
    for (const n of perSecond.slice(1)) expect(Math.abs(n - 50) / 50).toBeLessThan(0.05);
  });
});

describe("DiskScheduler on a simulated saturated disk", () => {
  /**
   * A disk that completes one I/O every 100 us (10,000 IOPS). Volume A keeps 4
   * I/Os outstanding at weight 1; B floods with 64 at weight 4, so by weight
   * alone A would get a fifth. Returns A's and B's I/Os per second.
   */
  function run(reservationA: number): { a: number; b: number } {
    const clock = new FakeClock();
    const s = new DiskScheduler(8, clock);
    const a = s.addClient(reservationA, 1);
    const b = s.addClient(0, 4);
    const done = { a: 0, b: 0 };
    const running: Array<() => void> = [];
    const make = (who: "a" | "b"): ScheduledIo => ({
      run: () =>
        running.push(() => {
          if (clock.now >= 1000) done[who]++;
          s.submit(who === "a" ? a : b, make(who));
        }),
    });
    for (let i = 0; i < 4; i++) s.submit(a, make("a"));
    for (let i = 0; i < 64; i++) s.submit(b, make("b"));
    for (let t = 0.1; t <= 3000; t += 0.1) {
      clock.advanceTo(t);
      const next = running.shift();
      if (next) {
        s.done();
        next();
      }
    }
    return { a: done.a / 2, b: done.b / 2 };
  }

  it("a volume with a reservation gets at least its floor against a flood; without one it gets its weighted share", () => {
    const reserved = run(3000);
    const plain = run(0);
    console.log(`simulated 10k IOPS disk: A reserved 3000 -> ${reserved.a}/s (B ${reserved.b}/s); A unreserved -> ${plain.a}/s`);
    expect(reserved.a).toBeGreaterThanOrEqual(3000 * 0.97);
    expect(reserved.a + reserved.b).toBeGreaterThan(9000);
    expect(Math.abs(plain.a - 2000) / 2000).toBeLessThan(0.05);
  });
});

describe("policy and admission", () => {
  it("validates policies with messages that name the field", () => {
    expect(validatePolicy({ limits: { totalIops: { rate: 2000 } } }).limits.totalIops).toEqual({ rate: 2000 });
    const bad = (() => {
      try {
        validatePolicy({ weight: -1 });
      } catch (e) {
        return e;
      }
    })();
    expect(isKeelsonError(bad, "INVALID_ARGUMENT") && bad.message).toContain("weight");
    const classes = parseQosClasses('{"gold": {"reservationIops": 3000, "weight": 4}}', "test");
    expect(classes.get("gold")?.reservationIops).toBe(3000);
    expect(() => parseQosClasses("[1]", "test")).toThrow(/object/);
  });

  it("admits reservations up to capability minus headroom and says what is free where", () => {
    const cap: DiskCapability = { iops: 10_000, bytesPerSec: 1e9, source: "operator", measuredAtMs: 0, headroom: 0.1 };
    admit("/dev/x", cap, { iops: 6000, bytesPerSec: 0 }, { iops: 3000, bytesPerSec: 0 });
    const denied = (() => {
      try {
        admit("/dev/x", cap, { iops: 6000, bytesPerSec: 0 }, { iops: 3001, bytesPerSec: 0 });
      } catch (e) {
        return e;
      }
    })();
    expect(isKeelsonError(denied, "QOS_ADMISSION_DENIED")).toBe(true);
    expect((denied as Error).message).toContain("3000 IOPS");
    expect((denied as Error).message).toContain("/dev/x");
  });
});
