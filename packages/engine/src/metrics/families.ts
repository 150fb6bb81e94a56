import { Counter, Gauge, type Registry } from "prom-client";

/** One sample of a family: its labels (rendered in this order) and its value. */
export type Sample<L extends string> = readonly [labels: Readonly<Record<L, string>>, value: number];

/** A metric family read from live state on each scrape. */
export interface FamilySpec<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  /** The samples now; called once per scrape, from prom-client's `collect()`. */
  read: () => Iterable<Sample<L>>;
}

/**
 * A gauge on `registry` whose samples are read on each scrape: nothing is
 * kept between scrapes (a volume gone is gone from the next one), and
 * nothing on the request path calls prom-client.
 */
export function gauge<L extends string>(registry: Registry, spec: FamilySpec<L>): Gauge<L> {
  return new Gauge<L>(collected(registry, spec, (g: Gauge<L>, labels, value) => g.set(labels, value)));
}

/** A counter on `registry` read on each scrape, as {@link gauge}: its values are totals kept by the engine. */
export function counter<L extends string>(registry: Registry, spec: FamilySpec<L>): Counter<L> {
  return new Counter<L>(collected(registry, spec, (c: Counter<L>, labels, value) => c.inc(labels, value)));
}

/** The options of a gauge or counter whose `collect()` replaces its samples with `spec.read()`'s, each put by `put`. */
function collected<L extends string, M extends Gauge<L> | Counter<L>>(
  registry: Registry,
  spec: FamilySpec<L>,
  put: (metric: M, labels: Readonly<Record<L, string>>, value: number) => void,
) {
  const { read } = spec;
  return {
    name: spec.name,
    help: spec.help,
    labelNames: spec.labelNames,
    registers: [registry],
    collect(this: M): void {
      this.reset();
      for (const [labels, value] of read()) put(this, labels, value);
    },
  };
}
