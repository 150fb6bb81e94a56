import type { Aggregator, PrometheusContentType, Registry, RegistryContentType } from "prom-client";
import { LATENCY_BUCKETS_S, type LatencyHistogram } from "../store/io-counters.js";

/** One sample as prom-client's registry renders it: `metricName` (the family's name and a suffix) with `labels`, in order. */
export interface CollectedSample {
  readonly metricName: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A histogram family as prom-client's registry reads it from `get()` on each scrape. */
export interface CollectedFamily {
  readonly name: string;
  readonly help: string;
  readonly type: "histogram";
  readonly values: CollectedSample[];
  readonly aggregator: Aggregator;
}

// prom-client's typings let a registry take only its own four metric classes, but the registry itself
// (lib/registry.js) keys a metric by `name`, calls `get()` on each scrape and `reset()` on
// resetMetrics(): that is the whole contract, and it is what a CollectedHistogram fulfils. This
// overload says so in the types, instead of a cast where it is registered.
declare module "prom-client" {
  interface Registry<BoundRegistryContentType extends RegistryContentType = PrometheusContentType> {
    registerMetric(metric: CollectedHistogram<string>): void;
  }
}

/** The `le` label of each bucket but the last ("+Inf"), as the exposition writes the bounds. */
const LE_VALUES: readonly string[] = LATENCY_BUCKETS_S.map(String);

/** How a {@link CollectedHistogram} is made. */
export interface CollectedHistogramConfig<L extends string> {
  name: string;
  help: string;
  registry: Registry;
  /** The histograms to show now, each with its labels (in the order they are rendered; `le` comes last). */
  read: () => Iterable<readonly [Readonly<Record<L, string>>, LatencyHistogram]>;
}

/**
 * A Prometheus histogram whose buckets are kept elsewhere: the request path
 * observes into plain `LatencyHistogram`s (no prom-client call per request),
 * and this reads them on each scrape. prom-client's own Histogram cannot take
 * counts held outside it (it only observes values one at a time), hence this
 * small metric object that hands the registry cumulative `_bucket` samples
 * (`le` the LATENCY_BUCKETS_S bounds, then "+Inf"), `_sum` and `_count`.
 */
export class CollectedHistogram<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = "histogram";
  readonly #read: CollectedHistogramConfig<L>["read"];

  constructor(config: CollectedHistogramConfig<L>) {
    this.name = config.name;
    this.help = config.help;
    this.#read = config.read;
    config.registry.registerMetric(this);
  }

  /** The family now (the registry awaits it on each scrape). */
  async get(): Promise<CollectedFamily> {
    const values: CollectedSample[] = [];
    for (const [labels, h] of this.#read()) this.#samples(values, labels, h);
    return { name: this.name, help: this.help, type: this.type, values, aggregator: "sum" };
  }

  /** Nothing to reset: the counts belong to the volumes (they are reset when the daemon starts). */
  reset(): void {}

  #samples(out: CollectedSample[], labels: Readonly<Record<string, string>>, h: LatencyHistogram): void {
    const bucket = `${this.name}_bucket`;
    let cumulative = 0;
    for (let i = 0; i < LE_VALUES.length; i++) {
      cumulative += h.counts[i] as number;
      out.push({ metricName: bucket, labels: { ...labels, le: LE_VALUES[i] as string }, value: cumulative });
    }
    out.push(
      { metricName: bucket, labels: { ...labels, le: "+Inf" }, value: h.count },
      { metricName: `${this.name}_sum`, labels, value: h.sumSeconds },
      { metricName: `${this.name}_count`, labels, value: h.count },
    );
  }
}
